"""Fleet benchmark: the runs list, search, insights, the admin's run list and the review queue over
many runs on PostgreSQL.

Fills a database of its own (``streamscope_fleet`` on 127.0.0.1:5432, user postgres, trust auth)
with --runs runs carrying realistic figures (log-normal TTFT and duration per model, statuses,
sources, a share flagged, a share with events), generated inside PostgreSQL with generate_series,
then times each request in-process through Django's test client (server time: routing, queries,
rendering; no network), median of --repeat tries after one warm-up. Also prints storage per
1,000 events on PostgreSQL and on SQLite.

    .venv/bin/python bench/fleet.py [--runs 1000000] [--with-events 0.01] [--repeat 5] [--keep]

--keep reuses a database already filled with the same --runs (generating 1,000,000 runs takes a
few minutes on two cores).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

DB_NAME = "streamscope_fleet"
MODELS = [("simulator", "sim-text", 180, 2500), ("openai", "gpt-4.1-mini", 420, 6000),
          ("openai", "gpt-4.1", 650, 9000), ("openai", "o4-mini", 1800, 15000), ("local-vllm", "qwen3", 90, 3000),
          ("local-vllm", "llama-3.1-8b", 70, 2200), ("openrouter", "claude-sonnet", 900, 11000),
          ("openrouter", "gemini-flash", 300, 4000)]
WORDS = ("why is the sky blue explain rayleigh scattering write a haiku about rain summarise this "
         "contract translate into french list three ideas for dinner refactor the function tests "
         "database index latency token stream model answer question weather paris london code "
         "python sql kubernetes deploy error budget invoice customer support refund policy").split()


def admin_connection():
    import psycopg

    return psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)


def prepare(runs: int, with_events: float, keep: bool) -> None:
    with admin_connection() as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DB_NAME,)).fetchone()
        if exists and not keep:
            conn.execute(f"DROP DATABASE {DB_NAME} WITH (FORCE)")
            exists = None
        if not exists:
            conn.execute(f"CREATE DATABASE {DB_NAME}")
    os.environ["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:5432/{DB_NAME}"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dashboard.settings")
    os.environ.setdefault("STREAMSCOPE_LOG_LEVEL", "WARNING")
    import django

    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", "--noinput", verbosity=0)
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM streams_run")
        have = cursor.fetchone()[0]
    if have == runs:
        print(f"reusing {have:,} runs in {DB_NAME}")
        with connection.cursor() as cursor:
            cursor.execute("ANALYZE")  # a migration may have rewritten the table
        return
    if have:
        raise SystemExit(f"{DB_NAME} holds {have:,} runs, not {runs:,}: run without --keep")
    generate(runs, with_events)


def generate(runs: int, with_events: float) -> None:
    from django.contrib.auth.models import Group, User
    from django.db import connection

    from streams.models import REVIEWER_GROUP

    started = time.perf_counter()
    users = [User.objects.create_user(f"user{i}", password="x") for i in range(50)]
    User.objects.create_superuser("root", "", "x")
    reviewer = User.objects.create_user("reviewer", password="x")
    reviewer.groups.add(Group.objects.get_or_create(name=REVIEWER_GROUP)[0])
    first_user = users[0].pk
    models_sql = "ARRAY[" + ",".join(f"ROW('{p}','{m}',{t},{d})::fleet_model" for p, m, t, d in MODELS) + "]"
    # A Zipf-like vocabulary: the named words are the most common, then 5,000 rarer terms, so a
    # search word can be common (half the runs) or rare (a handful), as in real text.
    vocabulary = WORDS + [f"term{n}" for n in range(5000)]
    words_sql = "ARRAY[" + ",".join(f"'{w}'" for w in vocabulary) + "]"
    pick_word = f"least({len(vocabulary)}, floor(exp(random() * ln({len(vocabulary)})))::int)"
    with connection.cursor() as cursor:
        cursor.execute("DROP TYPE IF EXISTS fleet_model")
        cursor.execute("CREATE TYPE fleet_model AS (provider text, model text, ttft float8, duration float8)")
        # Box-Muller normals make log-normal latencies; statuses ~ 90% completed, 4% failed...
        cursor.execute(f"""
            INSERT INTO streams_run (owner_id, provider, model, request, status, output_text, usage, metrics, error,
                response_id, background, worker, event_count, imported, source, source_name, created_at,
                started_at, finished_at, review_state, ttfb_ms, ttfc_ms, ttft_ms, ttfr_ms, ttfa_ms, duration_ms,
                tokens_per_s, pinned)
            SELECT {first_user} + (g.i %% 50), m.provider, m.model,
                jsonb_build_object('model', m.model, 'input', s.prompt, 'stream', true),
                st.status, s.answer, jsonb_build_object('output_tokens', tok.n),
                jsonb_build_object('ttfb_ms', round((f.ttft * 0.6)::numeric, 1), 'ttft_ms', round(f.ttft::numeric, 1),
                                   'ttfd_ms', round(f.ttft::numeric, 1), 'duration_ms', round(f.dur::numeric, 1),
                                   'events', tok.n + 8, 'output_tokens', tok.n,
                                   'tokens_per_s', round((tok.n / greatest(f.dur - f.ttft, 50) * 1000)::numeric, 2)),
                CASE WHEN st.status = 'failed'
                     THEN '{{"message": "upstream error", "code": "server_error"}}'::jsonb END,
                'resp_' || g.i, false, '', tok.n + 8, false,
                (ARRAY['playground','playground','gateway','gateway','gateway','import','fanout'])[1 + g.i %% 7], '',
                t.created, t.created, t.created + make_interval(secs => f.dur / 1000),
                CASE WHEN g.i %% 23 = 0 THEN 'flagged' WHEN g.i %% 5 = 0 THEN 'approved' ELSE 'unreviewed' END,
                round((f.ttft * 0.6)::numeric, 1), round((f.ttft * 0.7)::numeric, 1), round(f.ttft::numeric, 1),
                CASE WHEN m.model = 'o4-mini' THEN round((f.ttft * 0.4)::numeric, 1) END,
                CASE WHEN g.i %% 9 = 0 THEN round((f.ttft * 0.8)::numeric, 1) END,
                round(f.dur::numeric, 1), round((tok.n / greatest(f.dur - f.ttft, 50) * 1000)::numeric, 2), false
            FROM generate_series(1, %s) AS g(i)
            CROSS JOIN LATERAL (SELECT ({models_sql})[1 + (g.i::bigint * 7919) %% {len(MODELS)}] AS mm) AS pick
            CROSS JOIN LATERAL (SELECT (pick.mm).provider, (pick.mm).model, (pick.mm).ttft, (pick.mm).duration) AS m
            CROSS JOIN LATERAL (SELECT sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z1,
                                       sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()) AS z2
                                WHERE g.i > 0) AS n
            CROSS JOIN LATERAL (SELECT m.ttft * exp(0.45 * n.z1) AS ttft,
                                       m.ttft + m.duration * exp(0.5 * n.z2) AS dur) AS f
            CROSS JOIN LATERAL (SELECT (40 + (random() * 800))::int AS n WHERE g.i > 0) AS tok
            CROSS JOIN LATERAL (SELECT CASE WHEN r < 0.90 THEN 'completed' WHEN r < 0.94 THEN 'failed'
                                            WHEN r < 0.96 THEN 'incomplete' WHEN r < 0.985 THEN 'cancelled'
                                            ELSE 'interrupted' END AS status
                                FROM (SELECT random() AS r WHERE g.i > 0) AS rr) AS st
            CROSS JOIN LATERAL (SELECT now() - make_interval(secs => (g.i::float8 / %s) * 60 * 86400) AS created) AS t
            CROSS JOIN LATERAL (SELECT array_to_string(ARRAY(SELECT ({words_sql})[{pick_word}]
                                                             FROM generate_series(1, 8) WHERE g.i > 0), ' ') AS prompt,
                                       array_to_string(ARRAY(SELECT ({words_sql})[{pick_word}]
                                                             FROM generate_series(1, 30) WHERE g.i > 0), ' ') AS answer
                               ) AS s
        """, [runs, runs])
        cursor.execute("""
            INSERT INTO streams_runflag (run_id, rule_name, source, action, scope, seq, location, matched_text,
                                         context_before, context_after, created_at)
            SELECT id, 'bench rule', 'rule', 'flag', 'output_text', 3, 'output[0]', 'refund', '', '', created_at
            FROM streams_run WHERE review_state = 'flagged'""")
        step = max(1, round(1 / with_events)) if with_events > 0 else 0
        if step:
            cursor.execute("""
                INSERT INTO streams_event (run_id, seq, t, type, data)
                SELECT r.id, e.seq, e.seq * 25.0, 'response.output_text.delta',
                       '{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,'
                       || '"delta":"word ","sequence_number":' || e.seq || '}'
                FROM streams_run r CROSS JOIN generate_series(0, 39) AS e(seq)
                WHERE r.id %% %s = 0""", [step])
        cursor.execute("ANALYZE")
    print(f"generated {runs:,} runs in {time.perf_counter() - started:.0f} s")


def fold_rollup() -> list[str]:
    """Bring the insights roll-up up to date (the housekeeping loop does it every minute in a deployment),
    then time the fold that follows an hour of runs ending (each hour x model marked again)."""
    from django.db.models.functions import TruncHour

    from streams.history import rollup
    from streams.models import RollupMark, Run

    lines = []
    started = time.perf_counter()
    cells = rollup.fold()
    lines.append(f"fold of {cells:,} marked hours x models: {time.perf_counter() - started:.1f} s")
    latest = Run.objects.order_by("-created_at").values_list("created_at", flat=True).first()
    if latest is not None:
        hour = Run.objects.filter(created_at__gte=latest - rollup.HOUR).annotate(h=TruncHour("created_at"))
        cells = set(hour.values_list("h", "model", "provider").order_by())
        RollupMark.objects.bulk_create([RollupMark(created_at=h, model=m, provider=p) for h, m, p in cells])
        started = time.perf_counter()
        rollup.fold()
        lines.append(f"fold after the last hour's runs ended ({len(cells)} hours x models): "
                     f"{(time.perf_counter() - started) * 1000:.0f} ms")
    return lines


def timed(fn, repeat: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def measure(repeat: int) -> list[tuple[str, float, str]]:
    from django.contrib.auth.models import User
    from django.test import Client

    from streams.models import Run

    def client_for(name: str) -> Client:
        client = Client(HTTP_HOST="localhost")
        client.force_login(User.objects.get(username=name))
        return client

    root, plain, reviewer = client_for("root"), client_for("user7"), client_for("reviewer")

    def get(client: Client, url: str):
        def go():
            response = client.get(url)
            assert response.status_code == 200, (url, response.status_code, response.content[:300])
            return response
        return go

    page = get(root, "/api/runs/?all=1&limit=50")().json()
    checks = [
        ("list: newest 50 (staff, everyone's)", root, "/api/runs/?all=1&limit=50", 300),
        ("list: next page by cursor", root, f"/api/runs/?all=1&limit=50&cursor={page['next']}", 300),
        ("list: filtered + sorted by TTFT", root,
         "/api/runs/?all=1&model=gpt-4.1&status=completed&since=7d&sort=ttft_ms&limit=50", 300),
        ("list: slowest TTFT of all", root, "/api/runs/?all=1&sort=-ttft_ms&limit=50", 300),
        ("list: search, two common words", root, "/api/runs/?all=1&q=why+sky&limit=50", 300),
        ("list: search, a rare word", root, "/api/runs/?all=1&q=term4321&limit=50", 300),
        ("list: search, a word no run has", root, "/api/runs/?all=1&q=zanzibar&limit=50", 300),
        ("list: search + filter + sort", root,
         "/api/runs/?all=1&q=blue&provider=openai&sort=-duration_ms&limit=50", 300),
        ("list: one person's runs, search", plain, "/api/runs/?q=rain&limit=50", 300),
        ("list page (HTML), filtered", root, "/runs/?all=1&model=qwen3&sort=-tokens_per_s", 300),
        ("insights: 30 days by model, daily", root, "/api/insights/?group_by=model&since=30d&bucket=day", 500),
        ("insights: 30 days by provider, hourly", root,
         "/api/insights/?group_by=provider&since=30d&bucket=hour", 500),
        ("insights: one person, 30 days", plain, "/api/insights/?since=30d", 500),
        ("admin run list", root, "/admin/streams/run/", 500),
        ("review queue", reviewer, "/review/", 200),
    ]
    results = []
    for label, client, url, target in checks:
        ms = timed(get(client, url), repeat)
        results.append((label, ms, f"≤ {target} ms" + ("" if ms <= target else "  MISSED")))
        print(f"  {label:45s} {ms:8.1f} ms   {results[-1][2]}", flush=True)
    results.append(("(runs in the database)", float(Run.objects.count()), ""))
    return results


def check_figures() -> str:
    """The roll-up's counts and percentiles (staff) against the runs' own columns ranked in Python: counts
    equal, percentiles within the roll-up's stated error."""
    from django.contrib.auth.models import User
    from django.test import Client

    from streams.history.rollup import RELATIVE_ERROR
    from streams.models import Run
    from streams.protocol.metrics import percentile

    client = Client(HTTP_HOST="localhost")
    client.force_login(User.objects.get(username="root"))
    body = client.get("/api/insights/?group_by=model&model=qwen3&since=2d").json()
    [group] = body["groups"]
    runs = Run.objects.filter(model="qwen3", created_at__gte=body["since"], created_at__lt=body["until"])
    ok = group["runs"] == runs.count() and body["rolled_up"]
    for figure in ("ttft_ms", "duration_ms", "tokens_per_s"):
        values = sorted(runs.exclude(**{figure: None}).values_list(figure, flat=True))
        for name, fraction in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
            exact = percentile(values, fraction)
            ok = ok and abs(group[figure][name] - exact) <= RELATIVE_ERROR * exact + 1e-9
    return (f"roll-up insights over {group['runs']:,} runs {'match' if ok else 'DO NOT match'} the runs' own "
            f"figures (counts equal, percentiles within {RELATIVE_ERROR:.0%})")


def storage() -> list[tuple[str, str]]:
    from django.db import connection

    rows = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*), pg_total_relation_size('streams_event') FROM streams_event")
        count, size = cursor.fetchone()
    if count:
        rows.append(("PostgreSQL", f"{size / count * 1000 / 1024:.0f} KiB per 1,000 events "
                                   f"(table + indexes, {count:,} events of 40 small text deltas per run)"))
    rows.append(("SQLite", sqlite_storage()))
    return rows


def sqlite_storage(events: int = 100_000) -> str:
    """The same events in the SQLite schema the migrations make, per 1,000 events."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "events.sqlite3"
        db = sqlite3.connect(path)
        db.execute('CREATE TABLE "streams_event" ("id" integer NOT NULL PRIMARY KEY AUTOINCREMENT, '
                   '"seq" integer unsigned NOT NULL CHECK ("seq" >= 0), "t" real NOT NULL, '
                   '"type" varchar(200) NOT NULL, "data" text NOT NULL, "run_id" bigint NOT NULL)')
        db.execute('CREATE UNIQUE INDEX "event_run_seq_unique" ON "streams_event" ("run_id", "seq")')
        db.execute('CREATE INDEX "streams_event_run_id" ON "streams_event" ("run_id")')
        empty = path.stat().st_size
        rows = ((n // 40, n % 40, (n % 40) * 25.0, "response.output_text.delta",
                 '{"type":"response.output_text.delta","item_id":"msg_1","output_index":0,"content_index":0,'
                 f'"delta":"word ","sequence_number":{n % 40}}}') for n in range(events))
        db.executemany("INSERT INTO streams_event (run_id, seq, t, type, data) VALUES (?, ?, ?, ?, ?)", rows)
        db.commit()
        db.execute("VACUUM")
        db.close()
        size = path.stat().st_size - empty
    return f"{size / events * 1000 / 1024:.0f} KiB per 1,000 events (same events, table + indexes)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--with-events", type=float, default=0.01, help="share of runs with 40 events each")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--keep", action="store_true", help="reuse the database if it holds --runs runs")
    args = parser.parse_args()
    prepare(args.runs, args.with_events, args.keep)
    print("\ninsights roll-up")
    for line in fold_rollup():
        print(f"  {line}", flush=True)
    print(f"\nserver time, median of {args.repeat} (in-process Django test client, PostgreSQL)")
    for label, ms, _note in measure(args.repeat):
        if label.startswith("("):
            print(f"  {label:45s} {ms:,.0f}")
    print(f"\ncheck: {check_figures()}")
    print("\nstorage")
    for label, text in storage():
        print(f"  {label:12s} {text}")


if __name__ == "__main__":
    main()
