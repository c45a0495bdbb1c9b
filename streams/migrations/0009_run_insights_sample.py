"""The insights sample: a partial index of the runs whose id is a multiple of 16
(streams.history.insights.SAMPLE_EVERY), so percentiles over a large range read 1/16 of it.
Django's Index cannot say ``id % 16 = 0``, hence SQL; the predicate must stay as the query writes it."""

from django.db import migrations

COLUMNS = "model, provider, owner_id, ttft_ms, tokens_per_s, duration_ms"


def forward(apps, schema_editor):
    vendor = schema_editor.connection.vendor
    if vendor == "postgresql":
        schema_editor.execute(f"CREATE INDEX run_insights_sample ON streams_run (created_at) INCLUDE ({COLUMNS}) "
                              "WHERE (id % 16) = 0", None)  # None: no parameters, so % is the operator
    elif vendor == "sqlite":
        schema_editor.execute("CREATE INDEX run_insights_sample ON streams_run (created_at) WHERE (id % 16) = 0", None)


def backward(apps, schema_editor):
    if schema_editor.connection.vendor in ("postgresql", "sqlite"):
        schema_editor.execute("DROP INDEX IF EXISTS run_insights_sample")


class Migration(migrations.Migration):
    dependencies = [("streams", "0008_run_insights_cover")]

    operations = [migrations.RunPython(forward, backward)]
