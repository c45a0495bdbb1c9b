"""A viewer's access check: the run's owner is let in without a look-up of their groups (a query
per connection, dashboard/consumers._may_see_run); everyone else goes through the one access rule."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group

from streams import models
from streams.models import REVIEWER_GROUP
from tests.dashboard.test_permissions import connect
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


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
