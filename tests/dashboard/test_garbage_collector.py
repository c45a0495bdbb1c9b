"""The serving process's collector settings (dashboard/garbage_collector.py)."""

import gc
import json
import os
import subprocess
import sys

import pytest

from dashboard.garbage_collector import PauseLog, configure, limit_malloc_arenas, parse_threshold


def test_a_threshold_is_one_to_three_non_negative_integers():
    assert parse_threshold("700,10,10") == (700, 10, 10)
    assert parse_threshold(" 50000 ") == (50000,)
    for bad in ("", "a,b", "1,2,3,4", "-1"):
        with pytest.raises(ValueError):
            parse_threshold(bad)


def test_the_log_counts_each_generations_collections(tmp_path):
    log = configure("", str(tmp_path / "gc.json"))
    try:
        gc.collect(0)
        gc.collect(2)
        log.write()
    finally:
        gc.callbacks.remove(log)
    report = json.loads((tmp_path / "gc.json").read_text())
    assert report["generations"][0]["collections"] >= 1
    assert report["generations"][2]["collections"] >= 1
    assert report["generations"][2]["cpu_ms"] > 0
    assert report["threshold"] == list(gc.get_threshold())


def test_a_slow_pause_is_listed_with_its_generation(tmp_path, monkeypatch):
    monkeypatch.setattr("dashboard.garbage_collector.SLOW_PAUSE_S", 0.0)
    log = PauseLog(tmp_path / "gc.json")
    log("start", {"generation": 1, "collected": 0, "uncollectable": 0})
    log("stop", {"generation": 1, "collected": 3, "uncollectable": 0})
    assert [generation for _, generation, _, _ in log.slow] == [1]
    assert log.generations[1]["collections"] == 1 and log.generations[1]["collected"] == 3


def test_settings_apply_the_threshold_from_the_environment():
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "dashboard.settings", "STREAMSCOPE_GC_THRESHOLD": "5000,20,30"}
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); import gc; print(gc.get_threshold())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(5000, 20, 30)"


def test_each_write_samples_the_process_memory(tmp_path):
    log = PauseLog(tmp_path / "gc.json")
    log.write()
    log.write()
    memory = json.loads((tmp_path / "gc.json").read_text())["memory"]
    assert len(memory) == 2
    assert memory[0]["rss_kib"] > 0
    assert memory[0]["glibc_in_use_kib"] > 0 and "glibc_free_kib" in memory[0]


def test_the_serving_process_collects_young_objects_every_10000_allocations_by_default():
    # At Python's 700, a run's events buffered for a flush were promoted to the oldest generation,
    # whose full collections then ran every few seconds with many runs (docs/performance.md).
    env = {key: value for key, value in os.environ.items() if key != "STREAMSCOPE_GC_THRESHOLD"}
    env["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
    out = subprocess.run([sys.executable, "-c", "import django; django.setup(); import gc; print(gc.get_threshold())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    assert out.strip() == "(10000, 10, 10)"


def test_the_memory_sample_has_sqlites_heap(tmp_path):
    import sqlite3

    connection = sqlite3.connect(":memory:")
    connection.execute("create table t (x)")
    log = PauseLog(tmp_path / "gc.json")
    log.write()
    connection.close()
    assert json.loads((tmp_path / "gc.json").read_text())["memory"][0]["sqlite_kib"] > 0


def test_the_memory_sample_tells_the_event_loops_arena_from_other_threads():
    # With glibc's default arenas a thread that allocates gets its own; what it holds shows outside the
    # main one (a process of its own: this one's settings allow one arena).
    import platform

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's arenas")
    sample = run_with_arenas("", "memory_sample()")
    assert 0 < sample["glibc_main_arena_kib"] <= sample["glibc_arenas_kib"]
    assert 0 <= sample["glibc_main_free_kib"] <= sample["glibc_free_kib"]
    assert sample["glibc_arenas_kib"] - sample["glibc_main_arena_kib"] > 6_000  # the thread's ~8 MB


def test_the_heap_figures_are_glibcs_own_totals():
    # One malloc_info read gives what mallinfo2 gives (each walks every free chunk under the arenas' locks).
    import ctypes
    import platform

    from dashboard.garbage_collector import glibc_heap

    if platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's arenas")

    class Mallinfo2(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd",
                                                          "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Mallinfo2
    held = [bytes(2000 + i) for i in range(2000)]  # kept until both are read: nothing moves between them
    del held[::2]
    heap, info = glibc_heap(libc), libc.mallinfo2()
    assert heap is not None
    assert heap["arenas"] == info.arena and heap["mapped"] == info.hblkhd
    assert abs(heap["free"] - info.fordblks) < 64 * 1024 and abs(heap["in_use"] - info.uordblks) < 64 * 1024
    assert heap["main_arena"] <= heap["arenas"] and heap["main_free"] <= heap["free"]
    held.clear()


ARENAS_SCRIPT = """
import ctypes, json, os, sys, threading
sys.path.insert(0, os.getcwd())
os.environ["DJANGO_SETTINGS_MODULE"] = "dashboard.settings"
import django
django.setup()
from dashboard.garbage_collector import glibc_heap, memory_sample

kept = []
def allocate():  # a thread's own allocations, as the database thread's SQLite and bound values
    kept.extend(bytearray(4000 + i) for i in range(2000))
thread = threading.Thread(target=allocate)
thread.start()
thread.join()
print(json.dumps(%s))
"""


def run_with_arenas(setting: str, expression: str):
    """``expression``'s value, in a new process with ``STREAMSCOPE_MALLOC_ARENAS=setting`` whose thread
    allocated ~8 MB and kept it."""
    env = {name: value for name, value in os.environ.items() if name not in ("MALLOC_ARENA_MAX", "GLIBC_TUNABLES")}
    env["STREAMSCOPE_MALLOC_ARENAS"] = setting
    done = subprocess.run([sys.executable, "-c", ARENAS_SCRIPT % expression], env=env, capture_output=True,
                          text=True, timeout=120, cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas")
@pytest.mark.parametrize("setting, own_arena", [("1", False), ("", True)])
def test_the_settings_limit_glibcs_arenas_before_threads_start(setting, own_arena):
    heap = run_with_arenas(setting, 'glibc_heap(ctypes.CDLL("libc.so.6"))')
    if heap is None:
        pytest.skip("not glibc")
    # With one arena the thread's ~8 MB are in the main arena: every arena's bytes are the main one's.
    assert (heap["arenas"] > heap["main_arena"]) is own_arena


@pytest.mark.parametrize("bad", ["abc", "1.5", "0", "-1", str(2**31)])
def test_a_bad_arena_count_is_refused_by_name(bad):
    with pytest.raises(ValueError, match="STREAMSCOPE_MALLOC_ARENAS"):
        limit_malloc_arenas(bad, environ={})


@pytest.mark.parametrize("environ", [{"MALLOC_ARENA_MAX": "4"}, {"GLIBC_TUNABLES": "glibc.malloc.arena_max=4"}])
def test_the_operators_own_glibc_setting_wins(environ, monkeypatch):
    import ctypes

    calls = []
    monkeypatch.setattr(ctypes, "CDLL", lambda name: calls.append(name))
    assert limit_malloc_arenas("1", environ=environ) is False
    assert calls == []
    assert limit_malloc_arenas("", environ={}) is False
