"""``python -m simulator.serve``: the simulator alone on uvicorn does over HTTP what it did under
Daphne (tests/simulator/conftest.py also runs every test of test_simulator.py against it): the
same headers, chunked streams, kept-alive connections, the body size limit, and a client that
leaves stops its stream's generation."""

from __future__ import annotations

import importlib.util
import json
import socket
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from simulator.serve import parse_args, simulator_only_environment, uvicorn_loop
from tests.support.servers import start_daphne, start_simulator, stop_process

pytestmark = pytest.mark.server

STREAM = {"model": "sim-text", "input": "hi", "stream": True,
          "metadata": {"sim_seed": "s", "sim_tokens": "6", "sim_tokens_per_s": "max"}}


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[dict[str, str]]:
    """Both simulator-only processes: {"uvicorn": …/sim/v1, "daphne": …/sim/v1}."""
    uvicorn, uvicorn_url = start_simulator(tmp_path_factory.mktemp("uvicorn"))
    daphne, daphne_url = start_daphne(tmp_path_factory.mktemp("daphne"), extra_env={"STREAMSCOPE_SIMULATOR_OPEN": "1"})
    try:
        yield {"uvicorn": uvicorn_url + "/sim/v1", "daphne": daphne_url + "/sim/v1"}
    finally:
        stop_process(uvicorn)
        stop_process(daphne)


@pytest.fixture(scope="module")
def sim(servers) -> str:
    return servers["uvicorn"]


# Set by the server or per response, not by the simulator's code path.
VARYING = {"date", "server", "x-request-id", "openai-processing-ms", "content-length", "transfer-encoding"}


@pytest.mark.parametrize("model", ["sim-text", "sim-http-429"])
def test_same_status_headers_and_bytes_as_under_daphne(servers, model):
    body = {**STREAM, "model": model}
    answers = {name: httpx.post(url + "/responses", json=body, timeout=30) for name, url in servers.items()}
    uvicorn, daphne = answers["uvicorn"], answers["daphne"]
    assert uvicorn.status_code == daphne.status_code
    assert {k: v for k, v in uvicorn.headers.items() if k not in VARYING} == \
        {k: v for k, v in daphne.headers.items() if k not in VARYING}
    assert uvicorn.headers["x-content-type-options"] == "nosniff" and uvicorn.headers["x-request-id"]
    assert uvicorn.content == daphne.content


def test_the_sdk_streams_and_gets_errors(sim):
    client = openai.OpenAI(base_url=sim, api_key="unused", max_retries=0, timeout=30)
    with client.responses.stream(model="sim-text", input="hi", metadata=STREAM["metadata"]) as stream:
        text = "".join(event.delta for event in stream if event.type == "response.output_text.delta")
        final = stream.get_final_response()
    assert final.status == "completed" and final.output_text == text
    with pytest.raises(openai.RateLimitError) as raised:
        client.responses.create(model="sim-http-429", input="hi", stream=True)
    assert raised.value.response.headers["retry-after"]
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model="sim-text", input="hi", temperature=5)


def raw_exchange(sim: str, requests: list[bytes], reads_until: bytes, count: int) -> bytes:
    """Send ``requests`` on one TCP connection; read until ``reads_until`` was seen ``count`` times."""
    url = httpx.URL(sim)
    received = b""
    with socket.create_connection((url.host, url.port), timeout=10) as sock:
        for request in requests:
            sock.sendall(request)
        while received.count(reads_until) < count:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received


def post(sim: str, body: bytes) -> bytes:
    head = (f"POST {httpx.URL(sim).path}/responses HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return head.encode() + body


def test_streams_are_chunked_and_a_connection_serves_one_request_after_another(sim):
    body = json.dumps(STREAM).encode()
    received = raw_exchange(sim, [post(sim, body), post(sim, body)], b"\r\n0\r\n\r\n", 2)
    answers = received.split(b"HTTP/1.1 ")[1:]
    assert len(answers) == 2
    for answer in answers:
        head = answer.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"200") and b"transfer-encoding: chunked" in head
        assert b"text/event-stream; charset=utf-8" in head and b"response.completed" in answer


def test_a_body_over_the_limit_gets_an_openai_shaped_413(sim):
    response = httpx.post(sim + "/responses", content=b"x" * (5 * 1024 * 1024 + 1),
                          headers={"content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_a_client_that_leaves_stops_the_generation(sim):
    body = {"model": "sim-text", "input": "hi", "stream": True,
            "metadata": {"sim_tokens": "5000", "sim_tokens_per_s": "100", "sim_first_token_ms": "0"}}
    with httpx.stream("POST", sim + "/responses", json=body, timeout=30) as response:
        lines = response.iter_lines()
        response_id = next(json.loads(line[6:]) for line in lines if line.startswith("data: "))["response"]["id"]
    deadline = time.monotonic() + 10
    while (status := httpx.get(f"{sim}/responses/{response_id}", timeout=10).json()["status"]) != "cancelled":
        assert status == "in_progress" and time.monotonic() < deadline
        time.sleep(0.05)


def test_a_dropped_connection_is_a_transport_error(sim):
    body = {"model": "sim-dropped", "input": "hi", "stream": True,
            "metadata": {"sim_tokens": "40", "sim_tokens_per_s": "max"}}
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        httpx.stream("POST", sim + "/responses", json=body, timeout=30) as response,
    ):
        for _line in response.iter_lines():
            pass


def test_the_command_opens_the_simulator_and_sets_the_write_interval():
    env = simulator_only_environment(parse_args(["--port", "9100", "--write-interval-ms", "100"]))
    assert env["STREAMSCOPE_SIMULATOR_OPEN"] == "1" and env["STREAMSCOPE_RECOVERY_INTERVAL_S"] == "0"
    assert env["STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS"] == "100.0"
    assert "STREAMSCOPE_SIMULATOR_WRITE_INTERVAL_MS" not in simulator_only_environment(parse_args([]))


def test_the_command_runs_on_asyncios_loop_unless_asked_for_uvloop():
    assert uvicorn_loop({}) == "asyncio"  # not uvicorn's "auto", which takes uvloop whenever it is installed
    assert uvicorn_loop({"STREAMSCOPE_EVENT_LOOP": " UVLOOP"}) == "uvloop"
    assert uvicorn_loop({"STREAMSCOPE_EVENT_LOOP": "auto"}) == "auto"
    with pytest.raises(SystemExit, match="auto, uvloop, asyncio"):
        uvicorn_loop({"STREAMSCOPE_EVENT_LOOP": "trio"})


@pytest.mark.parametrize("name", ["asyncio", pytest.param("uvloop", marks=pytest.mark.skipif(
    importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed"))])
def test_the_simulator_process_serves_on_the_chosen_loop(name, tmp_path):
    process, base_url = start_simulator(tmp_path, extra_env={"STREAMSCOPE_EVENT_LOOP": name},
                                        args=("--log-level", "info"))
    try:
        with httpx.stream("POST", base_url + "/sim/v1/responses", json=STREAM) as response:
            assert response.status_code == 200
            assert b"response.completed" in response.read()
    finally:
        stop_process(process)
    log = next(tmp_path.glob("simulator-*.log")).read_text()
    assert f"serving on {name}'s event loop" in log
