"""The inter-token gap's 95th percentile as a column (insights), filled from each run's stored
metrics; the insights sample index carries it too (PostgreSQL INCLUDE)."""

import math

from django.db import migrations, models


def backfill(apps, schema_editor):
    Run = apps.get_model("streams", "Run")
    batch = []
    for run in Run.objects.only("id", "metrics").iterator(chunk_size=2000):
        value = (run.metrics or {}).get("gap_p95_ms") if isinstance(run.metrics, dict) else None
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            run.gap_p95_ms = float(value)
            batch.append(run)
        if len(batch) >= 2000:
            Run.objects.bulk_update(batch, ["gap_p95_ms"])
            batch = []
    if batch:
        Run.objects.bulk_update(batch, ["gap_p95_ms"])


COLUMNS = "model, provider, owner_id, ttft_ms, tokens_per_s, duration_ms"


def sample_index(apps, schema_editor, columns):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS run_insights_sample", None)
    schema_editor.execute(f"CREATE INDEX run_insights_sample ON streams_run (created_at) INCLUDE ({columns}) "
                          "WHERE (id % 16) = 0", None)


class Migration(migrations.Migration):
    dependencies = [("streams", "0009_run_insights_sample")]

    operations = [
        migrations.AddField(model_name="run", name="gap_p95_ms", field=models.FloatField(blank=True, null=True)),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.RunPython(lambda apps, editor: sample_index(apps, editor, COLUMNS + ", gap_p95_ms"),
                             lambda apps, editor: sample_index(apps, editor, COLUMNS)),
    ]
