"""``manage.py streamworker`` runs its worker on the event loop STREAMSCOPE_EVENT_LOOP chooses (uvloop
where installed; streams/event_loop.py)."""

from __future__ import annotations

import importlib.util

import pytest
from django.core.management.base import CommandError

from streams.event_loop import running_loop_name
from streams.management.commands import streamworker

needs_uvloop = pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")


@pytest.mark.parametrize("name", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_the_worker_serves_on_the_chosen_loop(name, monkeypatch):
    ran_on = []

    async def serve(self, max_runs, drain_seconds) -> int:
        ran_on.append(running_loop_name())
        return 0  # nothing left running

    shared_layer = object()  # stands for a Redis layer: the command refuses the in-memory one
    monkeypatch.setattr(streamworker, "workers_layer", lambda: shared_layer)
    monkeypatch.setattr(streamworker, "get_channel_layer", lambda: shared_layer)
    monkeypatch.setattr(streamworker.Command, "serve", serve)
    monkeypatch.setenv("STREAMSCOPE_EVENT_LOOP", name)
    streamworker.Command().handle()
    assert ran_on == [name]


def test_a_choice_the_worker_cannot_run_is_a_command_error(monkeypatch):
    monkeypatch.setattr(streamworker, "workers_layer", lambda: object())
    monkeypatch.setattr(streamworker, "get_channel_layer", lambda: object())
    monkeypatch.setenv("STREAMSCOPE_EVENT_LOOP", "trio")
    with pytest.raises(CommandError, match="use one of auto, uvloop, asyncio"):
        streamworker.Command().handle()
