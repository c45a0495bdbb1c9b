"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}`` with an HTTP status."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class APIErrorSpec:
    """One error as the OpenAI API reports it, plus the HTTP status and extra headers."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


class SimulatorError(Exception):
    """Raised inside the simulator for a request it refuses; views turn it into JSON."""

    def __init__(self, spec: APIErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec


def invalid(message: str, param: str | None = None, code: str | None = None) -> SimulatorError:
    return SimulatorError(APIErrorSpec(400, message, "invalid_request_error", code, param))


def not_found(message: str, param: str | None = None) -> SimulatorError:
    return SimulatorError(APIErrorSpec(404, message, "invalid_request_error", None, param))


# The HTTP-error scenarios answer with these, whatever the request says.
HTTP_ERRORS: dict[int, APIErrorSpec] = {
    400: APIErrorSpec(
        400,
        "Invalid value for 'input': the simulator scenario sim-http-400 rejects every request.",
        "invalid_request_error",
        "invalid_value",
        "input",
    ),
    401: APIErrorSpec(
        401,
        "Incorrect API key provided. You can find your API key at "
        "https://platform.openai.com/account/api-keys. (simulated by sim-http-401)",
        "invalid_request_error",
        "invalid_api_key",
        None,
    ),
    429: APIErrorSpec(
        429,
        "Rate limit reached for sim-http-429 in organization org-simulator on requests per min "
        "(RPM): Limit 3, Used 3, Requested 1. Please try again in 1s.",
        "requests",
        "rate_limit_exceeded",
        None,
        headers={
            "retry-after": "1",
            "x-ratelimit-limit-requests": "3",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "1s",
        },
    ),
    500: APIErrorSpec(
        500,
        "The server had an error while processing your request. Sorry about that! "
        "(simulated by sim-http-500)",
        "server_error",
        None,
        None,
    ),
}


def number_text(value: Any) -> str:
    """Format a number the way the API quotes it back (-1, 2.5)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
