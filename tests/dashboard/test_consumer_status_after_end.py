"""A run that starts and ends between a viewer joining it and reading its opening: the viewer's last
status is the end, never the "streaming" published before it (review finding)."""
import json

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator

from dashboard import consumers, socket_watches
from dashboard.asgi import application
from streams.models import Run, RunStatus
from tests.dashboard.test_websocket_refusals import _session_cookie
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


async def test_the_last_status_a_viewer_gets_is_the_end(user, monkeypatch):
    run = await sync_to_async(make_run)(user, status=RunStatus.QUEUED, events=2)
    real = consumers._opening

    async def opening(run_id, after, user):
        # While this viewer is joined and reading its opening, the run starts and ends (both
        # published to the joined viewer, queued in its inbox since connect holds the turn).
        [sock] = [s for sockets in socket_watches.session_watch().sessions.values() for s in sockets]
        sock.offer({"type": "run.status", "run": run_id, "status": "streaming", "metrics": {}, "error": None,
                    "last_seq": None})
        await Run.objects.filter(pk=run_id).aupdate(status=RunStatus.COMPLETED)
        sock.offer({"type": "run.status", "run": run_id, "status": "completed", "metrics": {}, "error": None,
                    "last_seq": 1})
        return await real(run_id, after, user)

    monkeypatch.setattr(consumers, "_opening", opening)
    cookie, _ = await _session_cookie(user)
    comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=[
        (b"origin", b"http://localhost"), (b"host", b"localhost"), (b"cookie", cookie)])
    assert (await comm.connect(timeout=5))[0]
    statuses = []
    try:
        while True:
            frame = json.loads(await comm.receive_from(timeout=1))
            if frame["type"] == "status":
                statuses.append(frame["status"])
    except TimeoutError:
        pass
    try:
        await comm.disconnect()
    except BaseException:
        pass
    assert statuses[-1] == "completed", statuses
