"""Stop crosses web processes: an app streams through the gateway of one Daphne (scaled out on
PostgreSQL + Redis) and someone presses Stop through another; the app's SDK raises a clear error
instead of hanging, and the run ends cancelled in the shared database."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.support.live import wait_for
from tests.support.scaled import scaled_out_marks, two_web_processes

pytestmark = scaled_out_marks()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    yield from two_web_processes(tmp_path_factory.mktemp("scaled-gateway"))


def test_stop_pressed_on_another_web_process_ends_the_apps_stream(deployment):
    token = deployment.manage("create_token", "alice", "--name", "scaled").strip().splitlines()[-1]
    app_side, other_side = deployment.webs
    bearer = {"Authorization": f"Bearer {token}"}
    client = openai.OpenAI(base_url=f"{app_side}/gateway/simulator/v1", api_key=token, max_retries=0, timeout=30)
    stream = client.responses.create(model="sim-text", input="hello " * 50, stream=True,
                                     metadata={"sim_tokens_per_s": "20"})
    run_id = None
    deltas = 0
    with pytest.raises(openai.APIError) as caught:
        for event in stream:
            if event.type != "response.output_text.delta":
                continue
            deltas += 1
            if run_id is None:
                run_id = httpx.get(f"{other_side}/api/runs/?source=gateway", headers=bearer,
                                   timeout=10).json()["runs"][0]["id"]
                stopped = httpx.post(f"{other_side}/api/runs/{run_id}/cancel/", headers=bearer, timeout=10)
                assert stopped.status_code == 202
    assert caught.value.code == "cancelled_by_user"
    assert deltas < 50  # stopped mid-stream, not run to its end

    def cancelled_run():
        run = httpx.get(f"{other_side}/api/runs/{run_id}/", headers=bearer, timeout=10).json()
        return run if run["status"] == "cancelled" else None

    assert wait_for(cancelled_run, 15, "the run to end cancelled")["source"] == "gateway"
