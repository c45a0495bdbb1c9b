"""Which event loop the processes run on (streams/event_loop.py), and Daphne's launcher
(``python -m dashboard.serve``) really running Twisted's reactor on it."""

from __future__ import annotations

import asyncio
import importlib.util
import subprocess
import sys

import httpx
import pytest

from streams import event_loop
from streams.event_loop import EventLoopChoiceError, chosen_loop, loop_factory, use_chosen_loop
from tests.support.servers import ROOT, start_daphne, stop_process

needs_uvloop = pytest.mark.skipif(importlib.util.find_spec("uvloop") is None, reason="uvloop is not installed")


@pytest.fixture
def without_uvloop(monkeypatch):
    monkeypatch.setattr(event_loop, "uvloop_available", lambda: False)


def test_asyncios_loop_is_the_default_even_where_uvloop_is_installed():
    assert chosen_loop({}) == "asyncio"
    assert chosen_loop({"STREAMSCOPE_EVENT_LOOP": " "}) == "asyncio"
    assert chosen_loop({"STREAMSCOPE_EVENT_LOOP": "asyncio"}) == "asyncio"


@needs_uvloop
@pytest.mark.parametrize("value", ["uvloop", " UVLOOP ", "auto"])
def test_uvloop_where_asked_for_and_installed(value):
    assert chosen_loop({"STREAMSCOPE_EVENT_LOOP": value}) == "uvloop"


def test_without_uvloop_auto_falls_back_to_asyncio(without_uvloop):
    assert chosen_loop({"STREAMSCOPE_EVENT_LOOP": "auto"}) == "asyncio"


def test_asking_for_uvloop_where_it_is_missing_says_what_to_do(without_uvloop):
    with pytest.raises(EventLoopChoiceError, match="STREAMSCOPE_EVENT_LOOP=asyncio"):
        chosen_loop({"STREAMSCOPE_EVENT_LOOP": "uvloop"})


def test_an_unknown_value_is_refused():
    with pytest.raises(EventLoopChoiceError, match="auto, uvloop, asyncio"):
        chosen_loop({"STREAMSCOPE_EVENT_LOOP": "trio"})


@pytest.mark.parametrize("name", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_the_loop_factory_makes_the_named_kind(name):
    loop = loop_factory(name)()
    try:
        assert type(loop).__module__.split(".")[0] == name
    finally:
        loop.close()


@pytest.mark.parametrize("name", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_the_policy_makes_new_loops_of_the_chosen_kind(name):
    try:
        assert use_chosen_loop({"STREAMSCOPE_EVENT_LOOP": name}) == name
        loop = asyncio.new_event_loop()  # as daphne.server makes its reactor's loop
        assert type(loop).__module__.split(".")[0] == name
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)


# The launcher's own main() as far as Daphne's command line (--help stops there), then the loop
# Twisted's reactor runs: a private attribute of the reactor, read here only to check it.
REACTOR_LOOP = """
from dashboard.serve import main
try:
    main(["--help"])
except SystemExit:
    pass
from twisted.internet import reactor
print("reactor loop:", type(reactor._asyncioEventloop).__module__.split(".")[0])
"""


@pytest.mark.parametrize("name", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_the_launcher_puts_daphnes_reactor_on_the_chosen_loop(name):
    result = subprocess.run([sys.executable, "-c", REACTOR_LOOP], cwd=ROOT, capture_output=True, text=True,
                            env={"STREAMSCOPE_EVENT_LOOP": name, "PATH": ""}, check=True, timeout=60)
    assert result.stdout.splitlines()[-1] == f"reactor loop: {name}"


@pytest.mark.server
@pytest.mark.parametrize("name", ["asyncio", pytest.param("uvloop", marks=needs_uvloop)])
def test_a_served_request_runs_on_the_chosen_loop(name, tmp_path):
    process, base_url = start_daphne(tmp_path, extra_env={"STREAMSCOPE_EVENT_LOOP": name,
                                                          "STREAMSCOPE_LOG_LEVEL": "INFO",
                                                          "STREAMSCOPE_RECOVERY_INTERVAL_S": "0"})
    try:
        assert httpx.get(base_url + "/sim/v1/models").status_code in (200, 401)
    finally:
        stop_process(process)
    log = next(tmp_path.glob("daphne-*.log")).read_text()
    assert f"serving on {name}'s event loop" in log


def test_the_launcher_refuses_a_choice_it_cannot_run_with_a_clear_message():
    result = subprocess.run([sys.executable, "-m", "dashboard.serve", "--help"], cwd=ROOT, capture_output=True,
                            text=True, env={"STREAMSCOPE_EVENT_LOOP": "trio", "PATH": ""}, timeout=60)
    assert result.returncode == 1
    assert "STREAMSCOPE_EVENT_LOOP='trio': use one of auto, uvloop, asyncio" in result.stderr
