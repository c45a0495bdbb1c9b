"""Upstreams a run can stream from: the built-in simulator, OpenAI, any compatible server.

API keys are read from environment variables at request time and only ever placed in the
outgoing request's headers: never in a Run, an Event, a log line, a page or a frame.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from dataclasses import dataclass, field

from django.conf import settings

from simulator.scenarios import scenario_ids

_listening_at: str | None = None


def simulator_key() -> str:
    """The credential this deployment's own runs send to its built-in simulator: derived from the
    secret key, so every process of one deployment agrees and nobody outside can guess it."""
    digest = hmac.new(settings.SECRET_KEY.encode(), b"streamscope built-in simulator", hashlib.sha256)
    return "sim-internal-" + digest.hexdigest()


def note_listening_address(host: str, port: int) -> bool:
    """Remember where this process serves HTTP (from its first connection); True the first time."""
    global _listening_at
    if _listening_at is not None:
        return False
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    _listening_at = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    return True


def simulator_url() -> str:
    """Where runs reach the simulator: ``STREAMSCOPE_SIMULATOR_URL``, else this server itself."""
    if settings.STREAMSCOPE_SIMULATOR_URL:
        return settings.STREAMSCOPE_SIMULATOR_URL
    return f"{_listening_at or 'http://127.0.0.1:' + os.environ.get('PORT', '8000')}/sim/v1"


@dataclass(frozen=True)
class Provider:
    name: str
    label: str
    base_url: str
    key_env: str | None = None
    # Responses API ("responses") or Chat Completions streaming ("chat").
    protocol: str = "responses"
    # Whether to ask for background mode, which makes resume and cancel possible.
    supports_background: bool = False
    models: tuple[str, ...] = field(default_factory=tuple)
    # Whose upstream key the gateway sends: "server" (key_env, as runs do) or "caller" (the
    # gateway client's own key from its X-Upstream-Authorization header, forwarded, never kept).
    gateway_key: str = "server"

    def api_key(self) -> str | None:
        if self.name in ("simulator", "simulator-chat"):
            return simulator_key()
        return os.environ.get(self.key_env) if self.key_env else None

    def headers(self) -> dict[str, str]:
        headers = {"Accept": "text/event-stream"}
        key = self.api_key()
        if key:
            headers["Authorization"] = f"Bearer {key}"
        return headers

    @property
    def stream_url(self) -> str:
        path = "/chat/completions" if self.protocol == "chat" else "/responses"
        return self.base_url.rstrip("/") + path

    def public(self) -> dict:
        """What pages and the API may show: never the key, not even its variable's value."""
        return {
            "name": self.name,
            "label": self.label,
            "protocol": self.protocol,
            "models": list(self.models),
            "supports_background": self.supports_background,
            "gateway_key": self.gateway_key,
        }


def _parse_extra(spec: str) -> list[Provider]:
    """Providers from a JSON list: ``[{"name", "base_url", "key_env"?, "protocol"?, "background"?,
    "models"?, "gateway_key"?}]``. Only the *name* of the key's environment variable is configured here;
    ``"gateway_key": "caller"`` makes the gateway forward each caller's own key instead."""
    if not spec.strip():
        return []
    try:
        entries = json.loads(spec)
    except ValueError as exc:
        raise ValueError(f"STREAMSCOPE_PROVIDERS is not valid JSON: {exc}") from None
    providers = []
    for entry in entries:
        base_url = str(entry.get("base_url", ""))
        if not entry.get("name") or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"STREAMSCOPE_PROVIDERS entry needs a name and an http(s) base_url: {entry!r}")
        providers.append(
            Provider(
                name=entry["name"],
                label=entry.get("label", entry["name"]),
                base_url=base_url,
                key_env=entry.get("key_env") or None,
                protocol=entry.get("protocol", "responses"),
                supports_background=bool(entry.get("background", False)),
                models=tuple(entry.get("models", ())),
                gateway_key="caller" if entry.get("gateway_key") == "caller" else "server",
            )
        )
    return providers


def _simulator_models() -> tuple[str, ...]:
    return tuple(scenario_ids())


def get_providers() -> dict[str, Provider]:
    providers = [
        Provider(
            name="simulator",
            label="Simulator (built in)",
            base_url=simulator_url(),
            supports_background=True,
            models=_simulator_models(),
        ),
        Provider(
            name="simulator-chat",
            label="Simulator (Chat Completions)",
            base_url=simulator_url(),
            protocol="chat",
            models=("sim-text", "sim-function-calls"),
        ),
    ]
    if os.environ.get("OPENAI_API_KEY"):
        providers.append(
            Provider(
                name="openai",
                label="OpenAI",
                base_url=os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1"),
                key_env="OPENAI_API_KEY",
                supports_background=True,
                models=("gpt-5-mini", "gpt-5", "gpt-4.1-mini", "gpt-4o-mini", "o4-mini"),
            )
        )
    providers.extend(_parse_extra(settings.STREAMSCOPE_EXTRA_PROVIDERS))
    return {provider.name: provider for provider in providers}


class UnknownProvider(LookupError):
    pass


def get_provider(name: str) -> Provider:
    try:
        return get_providers()[name]
    except KeyError:
        raise UnknownProvider(f"unknown provider {name!r}") from None
