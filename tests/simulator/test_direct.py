"""With its gate open, /sim/v1/ is answered straight from ASGI (simulator.asgi); closed, Django (and
the gate) answer it as before."""

from __future__ import annotations

import asyncio
import json

from dashboard.simulator_gate import OpenSimulatorASGI
from simulator.pacing import encode_sse
from simulator.scenarios import build_events


def http_scope(path: str, method: str = "GET", host: bytes = b"127.0.0.1") -> dict:
    return {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "query_string": b"",
            "root_path": "", "scheme": "http", "headers": [(b"host", host), (b"content-type", b"application/json")],
            "client": ("127.0.0.1", 5000), "server": ("127.0.0.1", 8000)}


def call(app, scope: dict, body: bytes = b"") -> list[dict]:
    """Run one request through ``app``; the messages it sent."""
    sent: list[dict] = []

    async def run() -> None:
        requests = [{"type": "http.request", "body": body, "more_body": False}]
        never = asyncio.Event()

        async def receive() -> dict:
            if requests:
                return requests.pop()
            await never.wait()  # the client stays until the response is over
            return {"type": "http.disconnect"}

        async def send(message: dict) -> None:
            sent.append(message)

        await app(scope, receive, send)

    asyncio.run(run())
    return sent


async def django(scope, receive, send) -> None:
    await send({"type": "http.response.start", "status": 299, "headers": []})
    await send({"type": "http.response.body", "body": b"django"})


def body_of(sent: list[dict]) -> bytes:
    return b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


def test_open_gate_answers_directly_with_the_security_headers(settings):
    settings.STREAMSCOPE_SIMULATOR_OPEN = True
    sent = call(OpenSimulatorASGI(django), http_scope("/sim/v1/models"))
    start = sent[0]
    assert start["status"] == 200
    headers = {name.lower(): value for name, value in start["headers"]}
    assert headers[b"x-content-type-options"] == b"nosniff" and b"x-request-id" in headers
    assert json.loads(body_of(sent))["data"][0]["id"] == "sim-text"


def test_open_gate_behind_a_tls_proxy_is_secure_as_django_would_judge(settings):
    settings.STREAMSCOPE_SIMULATOR_OPEN = True
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_HSTS_SECONDS = 3600
    scope = http_scope("/sim/v1/models")
    scope["headers"].append((b"x-forwarded-proto", b"https"))

    def header_names(request_scope: dict) -> set[bytes]:
        return {name.lower() for name, _value in call(OpenSimulatorASGI(django), request_scope)[0]["headers"]}

    assert b"strict-transport-security" in header_names(scope)
    assert b"strict-transport-security" not in header_names(http_scope("/sim/v1/models"))


def test_open_gate_streams_the_same_frames(settings):
    settings.STREAMSCOPE_SIMULATOR_OPEN = True
    request = {"model": "sim-text", "input": "hi", "stream": True,
               "metadata": {"sim_seed": "d", "sim_tokens": "5", "sim_tokens_per_s": "max"}}
    sent = call(OpenSimulatorASGI(django), http_scope("/sim/v1/responses", "POST"), json.dumps(request).encode())
    assert sent[0]["status"] == 200
    assert sent[-1] == {"type": "http.response.body"}
    expected = b"".join(encode_sse(e) for e in build_events("sim-text", request))
    assert body_of(sent) == expected


def test_unknown_paths_and_bad_hosts_are_openai_shaped(settings):
    settings.STREAMSCOPE_SIMULATOR_OPEN = True
    sent = call(OpenSimulatorASGI(django), http_scope("/sim/v1/nope"))
    assert sent[0]["status"] == 404 and "Invalid URL" in json.loads(body_of(sent))["error"]["message"]
    settings.ALLOWED_HOSTS = ["example.org"]
    sent = call(OpenSimulatorASGI(django), http_scope("/sim/v1/models", host=b"evil.test"))
    assert sent[0]["status"] == 400


def test_closed_gate_and_other_paths_go_to_django(settings):
    settings.STREAMSCOPE_SIMULATOR_OPEN = False
    assert call(OpenSimulatorASGI(django), http_scope("/sim/v1/models"))[0]["status"] == 299
    settings.STREAMSCOPE_SIMULATOR_OPEN = True
    assert call(OpenSimulatorASGI(django), http_scope("/api/runs/"))[0]["status"] == 299


def test_a_body_larger_than_django_reads_is_refused_before_it_is_all_read(settings):
    settings.STREAMSCOPE_SIMULATOR_OPEN = True
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    sent = call(OpenSimulatorASGI(django), http_scope("/sim/v1/responses", "POST"), b"x" * 1001)
    assert sent[0]["status"] == 413 and "too large" in json.loads(body_of(sent))["error"]["message"]
