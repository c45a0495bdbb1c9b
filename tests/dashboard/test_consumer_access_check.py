"""A viewer's access check: the run's owner is let in without a look-up of their groups (a query
per connection, dashboard/consumers._may_see_run); everyone else goes through the one access rule."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import Group
from django.test import Client

from dashboard.asgi import application
from streams import models
from streams.models import REVIEWER_GROUP
from tests.dashboard.test_permissions import connect
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


async def _headers(person):
    client = Client()
    await sync_to_async(client.force_login)(person)
    return [(b"origin", b"http://localhost"), (b"host", b"localhost"),
            (b"cookie", f"sessionid={client.cookies['sessionid'].value}".encode())]


@pytest.fixture
def reviewer(django_user_model):
    person = django_user_model.objects.create_user("rita", password="rita-pass-123")
    person.groups.add(Group.objects.get_or_create(name=REVIEWER_GROUP)[0])
    return person


async def test_the_owner_is_let_in_without_asking_whether_they_review(user, other_user, reviewer, monkeypatch):
    asked = []
    real = models.is_reviewer
    monkeypatch.setattr(models, "is_reviewer", lambda person: asked.append(person.username) or real(person))
    run = await sync_to_async(make_run)(user, events=1)
    assert (await connect(run.pk, user))[0] is True
    assert asked == []
    assert await connect(run.pk, other_user) == (False, 4403)
    assert (await connect(run.pk, reviewer))[0] is True
    assert asked == [other_user.username, reviewer.username]


async def test_a_refused_viewer_gets_nothing_the_run_published_while_it_was_checked(user, other_user, monkeypatch):
    # The viewer joins its run before the access check (read with the opening, in one hop): what
    # the run publishes meanwhile waits in its inbox and must never reach a socket that is refused.
    from channels.layers import get_channel_layer

    from dashboard import consumers
    from streams.pipeline.viewers import local_viewers

    run = await sync_to_async(make_run)(user, events=1)
    real = consumers._opening
    joined = []

    async def opening(run_id, after, person):
        viewers = local_viewers(get_channel_layer())
        joined.append(len(viewers.runs.get(run_id, ())))
        viewers.deliver({"type": "run.events", "run": run_id, "first": 1, "events": ['{"seq":1}']})
        viewers.deliver({"type": "run.flag", "run": run_id, "flag": {"rule": "r"}})
        return await real(run_id, after, person)

    monkeypatch.setattr(consumers, "_opening", opening)
    comm = WebsocketCommunicator(application, f"/ws/runs/{run.pk}/", headers=await _headers(other_user))
    connected, _ = await comm.connect(timeout=5)
    assert connected
    assert await comm.receive_output(timeout=5) == {"type": "websocket.close", "code": 4403}
    assert joined == [1]
    assert run.pk not in local_viewers(get_channel_layer()).runs  # left at the refusal, not at the disconnect
    assert await comm.receive_nothing(timeout=0.2)
    await comm.disconnect()
