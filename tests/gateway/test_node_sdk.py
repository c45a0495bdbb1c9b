"""The official openai node SDK through the gateway of a real Daphne, unchanged but for baseURL and
apiKey (tests/gateway/node/gateway_check.mjs): a streamed and a whole response, a chat stream, a
failed stream, an HTTP error with its retry-after, a bad token and the models list. The SDK is
installed by `make test` (`npm ci` in tests/gateway/node, pinned by its package-lock.json)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.gateway.test_sdk import app, app_dir  # noqa: F401  (the module's Daphne, with alice's token)

pytestmark = pytest.mark.server

NODE_DIR = Path(__file__).parent / "node"


@pytest.fixture(scope="module")
def report(app) -> dict:  # noqa: F811
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the node SDK check needs it (Debian package nodejs)")
    if not (NODE_DIR / "node_modules" / "openai").is_dir():
        pytest.fail("the openai node SDK is not installed: run `npm ci --prefix tests/gateway/node` (make test does)")
    base_url, token = app
    done = subprocess.run([node, str(NODE_DIR / "gateway_check.mjs"), f"{base_url}/gateway/simulator/v1", token],
                          capture_output=True, text=True, timeout=120, cwd=NODE_DIR)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_streamed_response_arrives_whole_and_in_order(report):
    result = report["stream"]["ok"]
    assert result["types"][0] == "response.created" and result["types"][-1] == "response.completed"
    assert result["status"] == "completed"
    assert result["text"] and result["text"] == result["outputText"]


def test_a_whole_response_and_a_chat_stream(report):
    assert report["whole"]["ok"]["status"] == "completed" and report["whole"]["ok"]["text"]
    assert report["chat"]["ok"]["text"] and report["chat"]["ok"]["finish"] == "stop"


def test_errors_reach_the_node_sdk_as_they_were(report):
    assert "error" in report["failed"]
    limited = report["rateLimited"]["error"]
    assert limited["name"] == "RateLimitError" and limited["status"] == 429 and limited["retryAfter"]
    assert report["badToken"]["error"]["status"] == 401


def test_models_and_the_recorded_runs(app, report):  # noqa: F811
    assert "sim-text" in report["models"]["ok"]
    base_url, token = app
    runs = httpx.get(f"{base_url}/api/runs/?source=gateway&limit=200", timeout=10,
                     headers={"Authorization": f"Bearer {token}"}).json()["runs"]
    models = {run["model"] for run in runs}
    assert {"sim-text", "sim-failed", "sim-http-429"} <= models
