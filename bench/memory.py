"""Where the memory of an active run goes: RSS per run and per viewer, and what holds it.

Embedded mode, two phases in one Daphne process: N runs streaming from the simulator with nobody
watching (the run side: executor, recorder, upstream connection), then one viewer each connected
(the viewer side: websocket, consumer). At a baseline and after each phase the server process
reports its RSS, glibc's ``mallinfo2`` and pymalloc's arenas (so RSS beyond what Python allocated is
visible: free memory glibc keeps, fragmentation), the count of gc-tracked objects by type, and with
``--trace FRAMES`` a tracemalloc snapshot, grouped here by the library that allocated and by the
nearest frame of Streamscope's own code. At the end ``malloc_trim(0)`` shows how much RSS glibc was
holding free. Measure RSS with ``--trace 0`` (tracing inflates it); use a trace pass for the "what".

    flock /tmp/work/bench.lock .venv/bin/python bench/memory.py [--runs 100,300] [--rate 20] [--trace 12]
                                                           [--server-env MALLOC_ARENA_MAX=2]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import ctypes
import gc
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from pathlib import Path

from common import BENCH_ENV, PASSWORD, SIMULATOR_ONLY, USER, Viewer, login, machine, rss_mb
from many import raise_open_files_limit, start_together

from tests.support.servers import DAPHNE_OPTIONS, ROOT, free_port, manage, start_daphne, stop_process, wait_for_http

PHASES = ("baseline", "started", "streaming", "viewers", "closed")
SITE = "site-packages" + os.sep


# --- inside the server process ----------------------------------------------------------------

class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc():
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = _Mallinfo2
    return libc


def _sqlite_memory() -> dict[str, int]:
    """SQLite's own heap (page caches, schemas, statements of every connection), which glibc counts
    as in use and tracemalloc does not see; empty where the library cannot be loaded."""
    try:
        lib = ctypes.CDLL("libsqlite3.so.0")  # the one _sqlite3 is linked to: the same counters
    except OSError:
        return {}
    lib.sqlite3_memory_used.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.restype = ctypes.c_int64
    lib.sqlite3_memory_highwater.argtypes = [ctypes.c_int]
    return {"used": lib.sqlite3_memory_used(), "highwater": lib.sqlite3_memory_highwater(0)}


def _pymalloc_stats() -> dict[str, int]:
    """The totals of ``sys._debugmallocstats()`` (it writes to the C stderr, so that is borrowed)."""
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(out.fileno(), 2)
        try:
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    stats = {}
    for line in text.splitlines():
        if line.startswith("# arenas allocated current") or line.startswith("# bytes in "):
            name, _, value = line.rpartition("=")
            stats[name.strip("# ").strip()] = int(value.strip().replace(",", ""))
        elif line.startswith("Total"):
            # the first Total is pymalloc's arenas (a later one is the arena map's)
            stats.setdefault("total", int(line.rpartition("=")[2].strip().replace(",", "")))
    return stats


def _mappings() -> dict[str, int]:
    """Resident KiB by kind of mapping: the main heap, other anonymous memory by region size
    (64 MiB: a thread's malloc arena; 8 MiB: a thread's stack; 1 MiB: pymalloc), files; and threads."""
    kinds: collections.Counter = collections.Counter()
    kind = "?"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        head = line.split()
        if "-" in head[0] and not head[0].endswith(":"):
            start, end = (int(x, 16) for x in head[0].split("-"))
            size = (end - start) // 1024
            name = head[5] if len(head) > 5 else ""
            if name == "[heap]":
                kind = "heap (main arena)"
            elif name.startswith("/"):
                kind = "files"
            elif name:
                kind = name
            else:
                kind = {65536: "anon 64 MiB (thread arenas)", 8192: "anon 8 MiB (thread stacks)",
                        1024: "anon 1 MiB (pymalloc arenas)"}.get(size, "anon other")
                if size < 65536 and size > 8192 * 2:
                    kind = "anon other"
        elif head[0] == "Rss:":
            kinds[kind] += int(head[1])
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("Threads:"):
            kinds["threads"] = int(line.split()[1])
    return dict(kinds)


def _arenas(libc) -> dict[str, dict[str, int]]:
    """glibc's arenas one by one (``malloc_info``): bytes each holds from the system and how much of
    that is free, with the free chunks split by size. Arena 0 is the main thread's (the event loop);
    the others belong to other threads (the database thread, request threads)."""
    libc.open_memstream.restype = ctypes.c_void_p
    buffer, size = ctypes.c_char_p(), ctypes.c_size_t()
    stream = libc.open_memstream(ctypes.byref(buffer), ctypes.byref(size))
    if not stream:
        return {}
    libc.malloc_info(0, ctypes.c_void_p(stream))
    libc.fclose(ctypes.c_void_p(stream))
    text = ctypes.string_at(buffer, size.value).decode()
    libc.free(buffer)
    arenas: dict[str, dict[str, int]] = {}
    for heap in re.finditer(r'<heap nr="(\d+)">(.*?)</heap>', text, re.S):
        body = heap.group(2)
        figures = {"system": int(re.search(r'<system type="current" size="(\d+)"', body).group(1)),
                   "free": sum(map(int, re.findall(r'<total type="(?:fast|rest)" count="\d+" size="(\d+)"', body))),
                   "free < 1 KiB": 0, "free 1-64 KiB": 0, "free >= 64 KiB": 0}
        for low, total in re.findall(r'<size from="(\d+)" to="\d+" total="(\d+)"', body):
            band = "free < 1 KiB" if int(low) < 1024 else "free 1-64 KiB" if int(low) < 65536 else "free >= 64 KiB"
            figures[band] += int(total)
        arenas[heap.group(1)] = figures
    return arenas


def _holders(qualname: str, depth: int = 8) -> list[str]:
    """What keeps one live object of type ``qualname`` alive: a chain of referrers' types."""
    gc.collect()
    found = [o for o in gc.get_objects() if type(o).__qualname__ == qualname]
    if not found:
        return []
    chain, target, seen = [], found[-1], {id(found)}
    for _ in range(depth):
        # Not this function's own lists and frame, which refer to the target too.
        referrers = [r for r in gc.get_referrers(target) if id(r) not in seen and not isinstance(r, types.FrameType)]
        seen.add(id(referrers))
        seen.update(id(r) for r in referrers)
        if not referrers:
            break
        chain.append(" | ".join(sorted({f"{type(r).__module__}.{type(r).__qualname__}" for r in referrers})[:6]))
        target = referrers[0]
    return chain


def _report(dump_dir: Path, index: list[int], signum: int, frame) -> None:
    phase = index[0]
    index[0] += 1
    # Memory figures first: what this report itself allocates (the object list, the snapshot)
    # must not be in them.
    traced, peak = tracemalloc.get_traced_memory()
    libc = _libc()
    info = libc.mallinfo2()
    report = {
        "rss_kib": rss_mb(os.getpid()) * 1024,
        "mallinfo2": {name: getattr(info, name) for name, _ in _Mallinfo2._fields_},
        "pymalloc": _pymalloc_stats(),
        "sqlite": _sqlite_memory(),
        "mappings": _mappings(),
        "arenas": _arenas(libc),
        "tasks": len(asyncio.all_tasks(asyncio.get_event_loop())),
        "traced": traced,
        "traced_peak": peak,
    }
    if tracemalloc.is_tracing():
        tracemalloc.take_snapshot().dump(str(dump_dir / f"snapshot-{phase}.bin"))
    report["holders"] = {name: _holders(name) for name in os.environ.get("MEMORY_HOLDERS", "").split(",") if name}
    report["types"] = dict(collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}"
                                               for o in gc.get_objects()))
    if phase == len(PHASES) - 1:
        # The viewers have closed: what of theirs only a full collection frees (cyclic garbage), by
        # type, then what that collection gives back, then how much RSS glibc gives back when asked.
        gc.set_debug(gc.DEBUG_SAVEALL)
        try:
            gc.collect()
            report["garbage"] = dict(collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}"
                                                         for o in gc.garbage))
            gc.garbage.clear()
        finally:
            gc.set_debug(0)
        gc.collect()
        report["rss_after_collect_kib"] = rss_mb(os.getpid()) * 1024
        libc.malloc_trim(0)
        report["rss_after_trim_kib"] = rss_mb(os.getpid()) * 1024
    path = dump_dir / f"report-{phase}.json"
    path.with_suffix(".tmp").write_text(json.dumps(report))
    path.with_suffix(".tmp").rename(path)
    tracemalloc.reset_peak()  # the next report's peak: what happened between the two


def serve(port: int) -> None:
    """Daphne, as ``start_daphne`` runs it, reporting on SIGUSR1 (see :func:`_report`)."""
    frames = int(os.environ.get("MEMORY_TRACE_FRAMES", "0"))
    if frames:
        tracemalloc.start(frames)
    dump_dir = Path(os.environ["MEMORY_DUMP_DIR"])
    index = [0]
    signal.signal(signal.SIGUSR1, lambda signum, frame: _report(dump_dir, index, signum, frame))
    raise_open_files_limit()
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(["-b", "127.0.0.1", "-p", str(port), *DAPHNE_OPTIONS, "dashboard.asgi:application"])


# --- the harness -----------------------------------------------------------------------------

async def ask(process: subprocess.Popen, dump_dir: Path, phase: int) -> dict:
    process.send_signal(signal.SIGUSR1)
    path = dump_dir / f"report-{phase}.json"
    deadline = time.monotonic() + 300
    while not path.exists():
        if time.monotonic() > deadline or process.poll() is not None:
            raise RuntimeError(f"the server did not report phase {PHASES[phase]}")
        await asyncio.sleep(0.2)
    return json.loads(path.read_text())


async def measure(server: subprocess.Popen, base: str, dump_dir: Path, runs: int, rate: int,
                  settle: float) -> list[dict]:
    client = login(base)
    cookies = dict(client.cookies)
    # Warm-up: a few short runs watched to their end, so lazy imports and caches are in the baseline.
    warm = await start_together(client, 4, 20, 200, time.time())
    await asyncio.gather(*(Viewer(base, cookies, run_id).watch(timeout=60) for run_id in warm))
    await asyncio.sleep(1)
    reports = [await ask(server, dump_dir, 0)]
    first_token_at = time.time() + 5 + runs * 0.04
    tokens = int(rate * (first_token_at - time.time() + 3 * settle + runs * 0.05 + 60))
    ids = await start_together(client, runs, tokens, rate, first_token_at)
    await asyncio.sleep(1)
    reports.append(await ask(server, dump_dir, 1))  # connected upstream, waiting for the first token
    await asyncio.sleep(max(0.0, first_token_at - time.time()) + settle)
    reports.append(await ask(server, dump_dir, 2))
    viewers = [Viewer(base, cookies, run_id) for run_id in ids]
    watching = [asyncio.create_task(v.watch(timeout=600)) for v in viewers]
    await asyncio.wait_for(asyncio.gather(*(v.connected.wait() for v in viewers)), timeout=300)
    await asyncio.sleep(settle)
    reports.append(await ask(server, dump_dir, 3))
    status = {r["status"] for r in (client.get(f"/api/runs/{i}/").json() for i in ids[:: max(1, runs // 10)])}
    for task in watching:
        task.cancel()
    await asyncio.gather(*watching, return_exceptions=True)
    received = sum(len(v.seqs) for v in viewers)
    reports[-1]["check"] = {"sampled_statuses": sorted(status), "events_received": received}
    await asyncio.sleep(3)  # Daphne lets a closed connection's application go within a second
    reports.append(await ask(server, dump_dir, 4))
    return reports


def where(filename: str) -> str:
    """A frame's owner: Streamscope's own file, a library (site-packages), or the standard library."""
    if SITE in filename:
        return filename.split(SITE, 1)[1].split(os.sep, 1)[0].removesuffix(".py")
    root = str(ROOT) + os.sep
    if filename.startswith(root) and ".venv" not in filename:
        return filename[len(root):]
    parts = Path(filename).parts
    if len(parts) < 2:
        return filename
    return "stdlib:" + (parts[-2] if parts[-1] == "__init__.py" or parts[-2] in ("asyncio", "json", "http", "ssl")
                        else parts[-1].removesuffix(".py"))


def ours(filename: str) -> bool:
    return filename.startswith(str(ROOT)) and ".venv" not in filename and "/bench/" not in filename


def grouped(snapshot: tracemalloc.Snapshot) -> dict[str, collections.Counter]:
    by_library, by_ours, by_both = collections.Counter(), collections.Counter(), collections.Counter()
    for trace in snapshot.traces:
        frames = list(trace.traceback)  # oldest first
        library = where(frames[-1].filename)
        mine = next((f for f in reversed(frames) if ours(f.filename)), None)
        site = (f"{where(mine.filename)}:{mine.lineno}" if mine
                else f"(no frame of ours; from {where(frames[0].filename)})")
        by_library[library] += trace.size
        by_ours[site] += trace.size
        by_both[f"{site} -> {library}:{frames[-1].lineno}"] += trace.size
    return {"allocated by (innermost frame's library)": by_library,
            "on behalf of (nearest frame of Streamscope)": by_ours, "both": by_both}


def table(title: str, before: dict, after: dict, per: int, top: int, unit: str = "B") -> None:
    delta = {key: (after.get(key, 0) - before.get(key, 0)) / per for key in set(before) | set(after)}
    rows = sorted(delta.items(), key=lambda item: -abs(item[1]))[:top]
    print(f"    {title} (per {unit == 'B' and 'item' or unit}; total {sum(delta.values()):,.0f}):")
    for key, value in rows:
        print(f"      {value:>10,.0f}  {key}")


def explain(reports: list[dict], dump_dir: Path, runs: int, top: int) -> None:
    r0, r2, closed = reports[0], reports[3], reports[4]
    mi = [r["mallinfo2"] for r in reports]
    py = [r["pymalloc"] for r in reports]
    print(f"  N = {runs} runs; server tasks {' -> '.join(str(r['tasks']) for r in reports)};"
          f" check {r2.get('check')}")
    for name, a, b in (("run side, started (connected, before the first token)", 0, 1),
                       ("run side, streaming (no viewers)", 0, 2), ("viewer side (one viewer each)", 2, 3)):
        ra, rb = reports[a], reports[b]
        line = f"    {name}: RSS {(rb['rss_kib'] - ra['rss_kib']) / runs:,.1f} KiB each"
        line += (f"; glibc in use {(mi[b]['uordblks'] - mi[a]['uordblks']) / runs / 1024:,.1f} KiB,"
                 f" glibc free in arenas {(mi[b]['fordblks'] - mi[a]['fordblks']) / runs / 1024:,.1f} KiB,"
                 f" mmapped {(mi[b]['hblkhd'] - mi[a]['hblkhd']) / runs / 1024:,.1f} KiB")
        if "total" in py[a]:
            blocks = py[b].get("bytes in allocated blocks", 0) - py[a].get("bytes in allocated blocks", 0)
            line += (f"; pymalloc arenas {(py[b]['total'] - py[a]['total']) / runs / 1024:,.1f} KiB (of which"
                     f" allocated blocks {blocks / runs / 1024:,.1f} KiB)")
        if ra.get("sqlite") and rb.get("sqlite"):
            line += f"; SQLite's heap {(rb['sqlite']['used'] - ra['sqlite']['used']) / runs / 1024:,.1f} KiB"
        if ra["traced"]:
            line += (f"; tracemalloc {(rb['traced'] - ra['traced']) / runs / 1024:,.1f} KiB"
                     f" (peak since the last report {(rb['traced_peak'] - ra['traced']) / runs / 1024:,.1f} KiB)")
        print(line)
    print(f"    totals with the viewers: RSS {r2['rss_kib'] / 1024:,.0f} MiB; once they closed"
          f" {closed['rss_kib'] / 1024:,.0f} MiB, after a full collection {closed['rss_after_collect_kib'] / 1024:,.0f}"
          f" MiB, after malloc_trim(0) {closed['rss_after_trim_kib'] / 1024:,.0f} MiB; with the viewers: glibc arena"
          f" {mi[3]['arena'] / 2**20:,.0f} MiB (in use {mi[3]['uordblks'] / 2**20:,.0f}, free"
          f" {mi[3]['fordblks'] / 2**20:,.0f}), mmapped {mi[3]['hblkhd'] / 2**20:,.0f} MiB;"
          f" pymalloc {py[3].get('total', 0) / 2**20:,.0f} MiB")
    for name, a, b in (("started", 0, 1), ("streaming", 0, 2), ("viewers", 2, 3)):
        table(f"resident KiB by mapping, {name}", reports[a]["mappings"], reports[b]["mappings"], runs, 8,
              unit="run")
    for name, a, b in (("started", 0, 1), ("streaming", 0, 2), ("viewers", 2, 3)):
        before, after = reports[a].get("arenas", {}), reports[b].get("arenas", {})
        if not after:
            continue
        parts = []
        for nr, figures in sorted(after.items(), key=lambda item: int(item[0])):
            was = before.get(nr, dict.fromkeys(figures, 0))
            delta = {key: (figures[key] - was[key]) / runs / 1024 for key in figures}
            if abs(delta["system"]) >= 0.5 or abs(delta["free"]) >= 0.5:
                parts.append(f"#{nr}{' (main)' if nr == '0' else ''} {delta['system']:,.1f} held, {delta['free']:,.1f}"
                             f" free ({delta['free < 1 KiB']:,.1f} / {delta['free 1-64 KiB']:,.1f} /"
                             f" {delta['free >= 64 KiB']:,.1f} in chunks < 1 KiB / 1-64 KiB / >= 64 KiB)")
        print(f"    glibc arenas, {name}, KiB per {'viewer' if name == 'viewers' else 'run'}"
              f" ({len(after)} arenas): " + ("; ".join(parts) or "no change"))
    for phase, report in zip(PHASES, reports):
        for name, chain in report.get("holders", {}).items():
            print(f"    {phase}: one {name} is held by: " + "  <-  ".join(chain))
    table("gc-tracked objects by type, run side", r0["types"], reports[2]["types"], runs, top, unit="run")
    table("gc-tracked objects by type, viewer side", reports[2]["types"], r2["types"], runs, top, unit="viewer")
    table("cyclic garbage left by each closed viewer (found by a full collection 3 s after they closed)", {},
          closed.get("garbage", {}), runs, top, unit="viewer")
    snapshots = [dump_dir / f"snapshot-{i}.bin" for i in range(len(PHASES))]
    if all(path.exists() for path in snapshots):
        groups = [grouped(tracemalloc.Snapshot.load(str(path))) for path in snapshots]
        for side, a, b in (("run side", 0, 2), ("viewer side", 2, 3)):
            for kind in groups[0]:
                table(f"tracemalloc bytes, {side}, {kind}", groups[a][kind], groups[b][kind], runs, top,
                      unit="run" if side == "run side" else "viewer")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="100", help="comma-separated run counts, one fresh server each")
    parser.add_argument("--rate", type=int, default=20, help="events per second per run")
    parser.add_argument("--trace", type=int, default=0, help="tracemalloc frames (0: RSS only)")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds of streaming before each report")
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--holders", default="", help="comma-separated type names: print what keeps one alive")
    parser.add_argument("--server-env", action="append", default=[], help="KEY=VALUE for the server process")
    args = parser.parse_args()
    raise_open_files_limit()
    print(f"machine: {machine()}; load average {os.getloadavg()[0]:.2f}")
    work = Path(tempfile.mkdtemp(prefix="streamscope-memory-"))
    (work / "sim").mkdir()
    sim, sim_base = start_daphne(work / "sim", extra_env=SIMULATOR_ONLY)
    env = {**BENCH_ENV, "STREAMSCOPE_SIMULATOR_URL": sim_base + "/sim/v1", "STREAMSCOPE_WORKER_MAX_RUNS": "100000",
           "STREAMSCOPE_STALL_TIMEOUT_S": "300", "STREAMSCOPE_RECOVERY_INTERVAL_S": "0"}
    try:
        manage(work, "migrate", "--noinput", env=env)
        manage(work, "shell", "-c", "from django.contrib.auth.models import User;"
               f" User.objects.create_user({USER!r}, password={PASSWORD!r})", env=env)
        for runs in (int(n) for n in args.runs.split(",")):
            dump_dir = Path(tempfile.mkdtemp(prefix=f"dump-{runs}-", dir=work))
            port = free_port()
            server_env = {**os.environ, **env, "STREAMSCOPE_VAR_DIR": str(work), "PORT": str(port),
                          "DJANGO_SETTINGS_MODULE": "dashboard.settings", "MEMORY_DUMP_DIR": str(dump_dir),
                          "MEMORY_TRACE_FRAMES": str(args.trace),
                          "MEMORY_HOLDERS": args.holders,
                          **dict(item.split("=", 1) for item in args.server_env)}
            with open(work / f"server-{port}.log", "wb") as log:
                server = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], cwd=ROOT, env=server_env,
                                          stdout=log, stderr=subprocess.STDOUT)
            try:
                wait_for_http(f"http://127.0.0.1:{port}/accounts/login/", server, timeout=240)  # tracing: slow imports
                reports = asyncio.run(measure(server, f"http://127.0.0.1:{port}", dump_dir, runs, args.rate,
                                              args.settle))
            finally:
                stop_process(server)
            print(f"embedded, {runs} runs x {args.rate} ev/s, tracemalloc frames {args.trace},"
                  f" server env {args.server_env or '-'}, load average {os.getloadavg()[0]:.2f}")
            explain(reports, dump_dir, runs, args.top)
    finally:
        stop_process(sim)


if __name__ == "__main__":
    main()
