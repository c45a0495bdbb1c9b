"""Run.source: set where runs are made, shown in the API, filterable on the list and the API."""

import importlib

import pytest
from django.apps import apps as django_apps
from django.test import Client

from streams.models import Run, RunGroup, RunGroupMember

pytestmark = pytest.mark.django_db


def make(owner, **fields):
    return Run.objects.create(owner=owner, provider="simulator", model="m", request={"input": "x"}, **fields)


def test_source_is_in_the_api_and_filters_the_list(user):
    playground, gateway = make(user), make(user, source="gateway")
    client = Client()
    client.force_login(user)
    assert client.get(f"/api/runs/{gateway.pk}/").json()["source"] == "gateway"
    assert client.get(f"/api/runs/{playground.pk}/").json()["source"] == "playground"
    assert [r["id"] for r in client.get("/api/runs/?source=gateway").json()["runs"]] == [gateway.pk]
    assert {r["id"] for r in client.get("/api/runs/").json()["runs"]} == {playground.pk, gateway.pk}
    assert client.get("/api/runs/?source=nope").status_code == 400
    page = client.get("/runs/?source=gateway").content.decode()
    assert f"#{gateway.pk}<" in page and f"#{playground.pk}<" not in page


def test_backfill_marks_imports_and_fanout_members(user):
    imported = make(user, imported=True)
    member = make(user)
    plain = make(user)
    group = RunGroup.objects.create(owner=user, input="x")
    RunGroupMember.objects.create(group=group, run=member, position=0)
    migration = importlib.import_module("streams.migrations.0004_run_source")
    migration.backfill(django_apps, None)
    assert Run.objects.get(pk=imported.pk).source == "import"
    assert Run.objects.get(pk=member.pk).source == "fanout"
    assert Run.objects.get(pk=plain.pk).source == "playground"


def test_imports_are_marked_import(user):
    from streams.history.importer import import_stream

    body = b'event: response.created\ndata: {"type":"response.created","response":{"id":"r"}}\n\n'
    assert import_stream(body, owner=user, filename="x.sse").source == "import"


@pytest.mark.django_db(transaction=True)
async def test_fanout_members_are_marked_fanout(user):
    from streams.live import fanout, launcher

    launcher.use_launcher(NoLauncher())
    try:
        _group, runs = await fanout.start_group(user, "hi", [fanout.Variant(provider="simulator", model="sim-text")])
    finally:
        launcher.use_launcher(None)
    assert [run.source for run in runs] == ["fanout"]


class NoLauncher:
    async def launch(self, run_id, resume=False):
        pass

    async def cancel(self, run_id):
        return False
