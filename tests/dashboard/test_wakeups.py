"""The wake-up coalescing selector (streams/wakeups.py) and its switch, STREAMSCOPE_WAKEUP_WINDOW_MS
(streams/event_loop.py): idle it polls as asyncio's selector does; busy it waits a window before
polling; it never waits past the loop's next timer; a socket ready meanwhile is still served."""

from __future__ import annotations

import asyncio
import selectors
import socket
import subprocess
import sys
import threading

import pytest

from streams import wakeups
from streams.event_loop import EventLoopChoiceError, loop_factory, use_chosen_loop, wakeup_window_s
from streams.wakeups import CoalescingEpollSelector
from tests.support.servers import ROOT

WINDOW_S = 0.05  # long enough to tell a pause from no pause whatever the machine's load


@pytest.fixture
def selector(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr(wakeups.time, "sleep", slept.append)  # record the pauses instead of taking them
    polled: list[float | None] = []  # the timeouts epoll is given
    epoll_select = selectors.EpollSelector.select

    def poll(self, timeout=None):
        polled.append(timeout)
        return epoll_select(self, timeout)

    monkeypatch.setattr(selectors.EpollSelector, "select", poll)
    chosen = CoalescingEpollSelector(WINDOW_S, busy_after=3)
    chosen.slept, chosen.polled = slept, polled
    yield chosen
    chosen.close()


@pytest.fixture
def pair():
    a, b = socket.socketpair()
    yield a, b
    a.close()
    b.close()


def make_busy(selector, sock) -> None:
    """Polls that each find a socket already ready: wake-ups in quick succession."""
    while not selector.busy:
        assert selector.select(1.0)


def test_idle_it_polls_at_once_and_never_pauses(selector, pair):
    a, b = pair
    selector.register(b, selectors.EVENT_READ)
    assert selector.select(0.01) == []  # nothing ready: blocks for its timeout, as epoll does
    a.send(b"x")
    assert [key.fileobj for key, _ in selector.select(1.0)] == [b]
    b.recv(10)
    assert selector.select(0.01) == []
    assert selector.slept == [] and not selector.busy


def test_a_few_quick_wake_ups_are_not_yet_busy(selector, pair):
    a, b = pair
    a.send(b"x")
    selector.register(b, selectors.EVENT_READ)
    for _ in range(selector.busy_after - 1):
        assert selector.select(1.0)
    assert not selector.busy and selector.slept == []


def test_busy_with_nothing_ready_it_waits_the_window_before_polling(selector, pair):
    a, b = pair
    a.send(b"x")
    selector.register(b, selectors.EVENT_READ)
    make_busy(selector, b)
    b.recv(10)
    selector.polled.clear()
    assert selector.select(1.0) == []
    assert selector.slept == [WINDOW_S]
    assert selector.polled == [0, pytest.approx(1.0 - WINDOW_S)]  # nothing ready; the pause; the rest


def test_busy_what_is_already_ready_is_served_at_once(selector, pair):
    a, b = pair
    a.send(b"x")
    selector.register(b, selectors.EVENT_READ)
    make_busy(selector, b)
    ready = selector.select(1.0)
    assert [key.fileobj for key, _ in ready] == [b]
    assert selector.slept == []  # no pause while the loop has work waiting
    assert selector.busy


def test_busy_it_never_waits_past_the_loops_next_timer(selector, pair):
    a, b = pair
    a.send(b"x")
    selector.register(b, selectors.EVENT_READ)
    make_busy(selector, b)
    b.recv(10)
    selector.select(0.002)  # the next timer is due in 2 ms: the pause is those 2 ms, not the window
    assert selector.slept == [0.002]
    assert selector.polled[-1] == 0  # and epoll is not given them again


def test_a_poll_that_cannot_block_never_pauses(selector, pair):
    a, b = pair
    a.send(b"x")
    selector.register(b, selectors.EVENT_READ)
    make_busy(selector, b)
    assert selector.select(0)  # callbacks waiting to run: asyncio polls without blocking
    assert selector.slept == [] and selector.busy


def test_busy_ends_once_nothing_comes_within_the_window(selector, pair):
    a, b = pair
    a.send(b"x")
    selector.register(b, selectors.EVENT_READ)
    make_busy(selector, b)
    b.recv(10)
    assert selector.select(0.06) == []  # the pause, then nothing until the timeout: idle again
    assert not selector.busy
    a.send(b"y")
    assert selector.select(1.0)
    assert selector.slept == [WINDOW_S]  # only the one pause taken while it was busy


def test_busy_ends_with_a_wake_up_that_took_longer_than_the_window(selector, pair):
    a, b = pair
    a.send(b"x")
    selector.register(b, selectors.EVENT_READ)
    make_busy(selector, b)
    b.recv(10)
    later = threading.Timer(3 * WINDOW_S, a.send, (b"y",))  # arrivals slower than the window
    later.start()
    try:
        assert selector.select(5.0)
    finally:
        later.join()
    assert not selector.busy


def test_a_socket_that_becomes_ready_during_the_pause_is_served_without_waiting_for_the_timeout(pair, monkeypatch):
    a, b = pair
    chosen = CoalescingEpollSelector(WINDOW_S, busy_after=1)
    try:
        c, d = socket.socketpair()
        chosen.register(b, selectors.EVENT_READ)
        chosen.register(d, selectors.EVENT_READ)
        a.send(b"x")
        assert chosen.select(1.0)  # one quick wake-up: busy
        b.recv(10)
        # The other socket becomes ready while the selector waits out its window (a real sleep).
        monkeypatch.setattr(wakeups.time, "sleep", lambda seconds: c.send(b"y"))
        ready = chosen.select(5.0)  # served when the window is over, not when the 5 s timeout is
        assert [key.fileobj for key, _ in ready] == [d]
        assert chosen.pauses == 1
        c.close()
        d.close()
    finally:
        chosen.close()


def test_a_loop_made_with_the_window_serves_sockets_and_timers():
    loop = loop_factory("asyncio", {"STREAMSCOPE_WAKEUP_WINDOW_MS": "1"})()
    try:
        assert isinstance(loop._selector, CoalescingEpollSelector)  # asyncio's attribute, read to check

        async def echo_and_sleep() -> bytes:
            reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
            writer.write(b"ping")
            data = await reader.read(4)
            writer.close()
            await asyncio.sleep(0.01)  # a timer fires
            return data

        async def handle(reader, writer):
            writer.write(await reader.read(4))
            await writer.drain()
            writer.close()

        server = loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", 0))
        assert loop.run_until_complete(echo_and_sleep()) == b"ping"
        server.close()
        loop.run_until_complete(server.wait_closed())
    finally:
        loop.close()


def test_the_window_is_off_by_default():
    assert wakeup_window_s({}) == 0
    assert wakeup_window_s({"STREAMSCOPE_WAKEUP_WINDOW_MS": " "}) == 0
    assert loop_factory("asyncio", {}) is asyncio.SelectorEventLoop


@pytest.mark.parametrize("value", ["-1", "6", "soon"])
def test_a_window_out_of_range_is_refused(value):
    with pytest.raises(EventLoopChoiceError, match="STREAMSCOPE_WAKEUP_WINDOW_MS"):
        wakeup_window_s({"STREAMSCOPE_WAKEUP_WINDOW_MS": value})


def test_the_window_needs_asyncios_loop():
    with pytest.raises(EventLoopChoiceError, match="needs asyncio's loop"):
        loop_factory("uvloop", {"STREAMSCOPE_WAKEUP_WINDOW_MS": "1"})


def test_the_policy_makes_new_loops_with_the_window():
    try:
        assert use_chosen_loop({"STREAMSCOPE_WAKEUP_WINDOW_MS": "0.5"}) == "asyncio"
        loop = asyncio.new_event_loop()  # as daphne.server makes its reactor's loop
        assert isinstance(loop._selector, CoalescingEpollSelector)
        assert loop._selector.window_s == 0.0005
        loop.close()
    finally:
        asyncio.set_event_loop_policy(None)


# The launcher as far as Daphne's command line, then the selector of the loop Twisted's reactor runs.
REACTOR_SELECTOR = """
from dashboard.serve import main
try:
    main(["--help"])
except SystemExit:
    pass
from twisted.internet import reactor
print("reactor selector:", type(reactor._asyncioEventloop._selector).__name__)
"""


@pytest.mark.parametrize("window, selector_name", [("", "EpollSelector"), ("1", "CoalescingEpollSelector")])
def test_the_launcher_gives_daphnes_reactor_the_window(window, selector_name):
    result = subprocess.run([sys.executable, "-c", REACTOR_SELECTOR], cwd=ROOT, capture_output=True, text=True,
                            env={"STREAMSCOPE_WAKEUP_WINDOW_MS": window, "PATH": ""}, check=True, timeout=60)
    assert result.stdout.splitlines()[-1] == f"reactor selector: {selector_name}"
