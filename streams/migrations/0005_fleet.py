"""The fleet view: figures in indexed columns (filled from each run's stored metrics), pinning and
pruning for event retention, and full-text search over input and output.

Search is vendor-specific (docs/metrics.md, "Finding runs"): on PostgreSQL a GIN index over
``to_tsvector('english', input || output)``; on SQLite an FTS5 table ``streams_run_fts`` (rowid =
run id) kept in step by triggers. Other databases get neither and the list falls back to LIKE.
"""

import math

from django.db import migrations, models

COLUMNS = ("ttfb_ms", "ttfc_ms", "ttft_ms", "ttfr_ms", "ttfa_ms", "duration_ms", "tokens_per_s")


def backfill(apps, schema_editor):
    Run = apps.get_model("streams", "Run")
    batch = []
    for run in Run.objects.only("id", "metrics").iterator(chunk_size=2000):
        metrics = run.metrics if isinstance(run.metrics, dict) else {}
        if "ttft_ms" in metrics and "ttfd_ms" not in metrics:
            # Stored before the split: ttft_ms then meant the first delta of any kind.
            metrics = {**metrics, "ttft_ms": None}
        for key in COLUMNS:
            value = metrics.get(key)
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            setattr(run, key, float(value) if ok else None)
        batch.append(run)
        if len(batch) >= 2000:
            Run.objects.bulk_update(batch, COLUMNS)
            batch = []
    if batch:
        Run.objects.bulk_update(batch, COLUMNS)


PG_INPUT = "coalesce(request->>'input', request->>'messages', '')"
PG_VECTOR = f"to_tsvector('english'::regconfig, {PG_INPUT} || ' ' || output_text)"

SQLITE_INPUT = "coalesce(json_extract(NEW.request, '$.input'), json_extract(NEW.request, '$.messages'), '')"
SQLITE_FORWARD = [
    "CREATE VIRTUAL TABLE streams_run_fts USING fts5(input, output, tokenize = 'unicode61 remove_diacritics 2')",
    f"""CREATE TRIGGER streams_run_fts_insert AFTER INSERT ON streams_run BEGIN
        INSERT INTO streams_run_fts(rowid, input, output) VALUES (NEW.id, {SQLITE_INPUT}, NEW.output_text);
    END""",
    f"""CREATE TRIGGER streams_run_fts_update AFTER UPDATE OF request, output_text ON streams_run BEGIN
        DELETE FROM streams_run_fts WHERE rowid = OLD.id;
        INSERT INTO streams_run_fts(rowid, input, output) VALUES (NEW.id, {SQLITE_INPUT}, NEW.output_text);
    END""",
    """CREATE TRIGGER streams_run_fts_delete AFTER DELETE ON streams_run BEGIN
        DELETE FROM streams_run_fts WHERE rowid = OLD.id;
    END""",
    """INSERT INTO streams_run_fts(rowid, input, output)
       SELECT id, coalesce(json_extract(request, '$.input'), json_extract(request, '$.messages'), ''), output_text
       FROM streams_run""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS streams_run_fts_insert",
    "DROP TRIGGER IF EXISTS streams_run_fts_update",
    "DROP TRIGGER IF EXISTS streams_run_fts_delete",
    "DROP TABLE IF EXISTS streams_run_fts",
]


def search_forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX run_search_gin ON streams_run USING gin (({PG_VECTOR}))")
    elif vendor == "sqlite":
        for statement in SQLITE_FORWARD:
            schema_editor.execute(statement)


def search_backward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS run_search_gin")
    elif vendor == "sqlite":
        for statement in SQLITE_BACKWARD:
            schema_editor.execute(statement)



class Migration(migrations.Migration):

    dependencies = [
        ('streams', '0004_run_source'),
    ]

    operations = [
        migrations.AddField(
            model_name='run',
            name='duration_ms',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='run',
            name='events_pruned_at',
            field=models.DateTimeField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='run',
            name='pinned',
            field=models.BooleanField(default=False),
        ),
        migrations.AddField(
            model_name='run',
            name='tokens_per_s',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='run',
            name='ttfa_ms',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='run',
            name='ttfb_ms',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='run',
            name='ttfc_ms',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='run',
            name='ttfr_ms',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddField(
            model_name='run',
            name='ttft_ms',
            field=models.FloatField(blank=True, null=True),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['created_at', 'id'], name='run_created_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['ttfb_ms', 'id'], name='run_ttfb_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['ttfc_ms', 'id'], name='run_ttfc_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['ttft_ms', 'id'], name='run_ttft_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['ttfr_ms', 'id'], name='run_ttfr_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['ttfa_ms', 'id'], name='run_ttfa_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['duration_ms', 'id'], name='run_duration_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['tokens_per_s', 'id'], name='run_tokens_per_s_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['event_count', 'id'], name='run_event_count_id'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['model', 'created_at'], name='run_model_created'),
        ),
        migrations.AddIndex(
            model_name='run',
            index=models.Index(fields=['provider', 'created_at'], name='run_provider_created'),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.RunPython(search_forward, search_backward),
    ]
