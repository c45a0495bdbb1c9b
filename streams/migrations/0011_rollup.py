"""The insights roll-up (docs/metrics.md, "The roll-up"): a table of summed rows, a table of marks,
and the database triggers that write a mark whenever an ended run's figures may have changed (it
ends, changes, is deleted, gains or loses a flag). Every hour that already holds ended runs is marked
here, so the first fold builds the roll-up from the runs already stored."""

from django.db import migrations, models

ENDED = "('completed', 'incomplete', 'failed', 'cancelled', 'interrupted')"
# What the roll-up reads of a run: a change to any of these (an ended run on either side) marks it.
WATCHED = ("status", "created_at", "model", "provider", "ttft_ms", "tokens_per_s", "duration_ms", "gap_p95_ms")
MARK = "INSERT INTO streams_rollupmark (created_at, model, provider)"

POSTGRES_FORWARD = [
    f"""CREATE OR REPLACE FUNCTION streams_rollup_mark_run() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF TG_OP <> 'INSERT' THEN
            IF OLD.status IN {ENDED} THEN
                {MARK} VALUES (OLD.created_at, OLD.model, OLD.provider);
            END IF;
        END IF;
        IF TG_OP <> 'DELETE' THEN
            IF NEW.status IN {ENDED} THEN
                {MARK} VALUES (NEW.created_at, NEW.model, NEW.provider);
            END IF;
        END IF;
        RETURN NULL;
    END $$""",
    f"""CREATE OR REPLACE FUNCTION streams_rollup_mark_flag() RETURNS trigger LANGUAGE plpgsql AS $$
    DECLARE flagged_run bigint;
    BEGIN
        IF TG_OP = 'DELETE' THEN flagged_run := OLD.run_id; ELSE flagged_run := NEW.run_id; END IF;
        {MARK} SELECT created_at, model, provider FROM streams_run WHERE id = flagged_run AND status IN {ENDED};
        RETURN NULL;
    END $$""",
    f"""CREATE TRIGGER streams_run_rollup_insert AFTER INSERT ON streams_run FOR EACH ROW
        WHEN (NEW.status IN {ENDED}) EXECUTE FUNCTION streams_rollup_mark_run()""",
    f"""CREATE TRIGGER streams_run_rollup_update AFTER UPDATE ON streams_run FOR EACH ROW
        WHEN ((OLD.status IN {ENDED} OR NEW.status IN {ENDED})
              AND ({", ".join(f"OLD.{c}" for c in WATCHED)}) IS DISTINCT FROM ({", ".join(f"NEW.{c}" for c in WATCHED)}))
        EXECUTE FUNCTION streams_rollup_mark_run()""",
    f"""CREATE TRIGGER streams_run_rollup_delete AFTER DELETE ON streams_run FOR EACH ROW
        WHEN (OLD.status IN {ENDED}) EXECUTE FUNCTION streams_rollup_mark_run()""",
    """CREATE TRIGGER streams_runflag_rollup AFTER INSERT OR DELETE ON streams_runflag FOR EACH ROW
        EXECUTE FUNCTION streams_rollup_mark_flag()""",
    f"""{MARK} SELECT min(created_at), model, provider FROM streams_run WHERE status IN {ENDED}
        GROUP BY date_trunc('hour', created_at AT TIME ZONE 'UTC'), model, provider""",
]
POSTGRES_BACKWARD = [
    "DROP TRIGGER IF EXISTS streams_run_rollup_insert ON streams_run",
    "DROP TRIGGER IF EXISTS streams_run_rollup_update ON streams_run",
    "DROP TRIGGER IF EXISTS streams_run_rollup_delete ON streams_run",
    "DROP TRIGGER IF EXISTS streams_runflag_rollup ON streams_runflag",
    "DROP FUNCTION IF EXISTS streams_rollup_mark_run()",
    "DROP FUNCTION IF EXISTS streams_rollup_mark_flag()",
]

SQLITE_FORWARD = [
    f"""CREATE TRIGGER streams_run_rollup_insert AFTER INSERT ON streams_run WHEN NEW.status IN {ENDED} BEGIN
        {MARK} VALUES (NEW.created_at, NEW.model, NEW.provider);
    END""",
    f"""CREATE TRIGGER streams_run_rollup_update AFTER UPDATE ON streams_run
        WHEN (OLD.status IN {ENDED} OR NEW.status IN {ENDED})
             AND ({" OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in WATCHED)}) BEGIN
        {MARK} SELECT OLD.created_at, OLD.model, OLD.provider WHERE OLD.status IN {ENDED};
        {MARK} SELECT NEW.created_at, NEW.model, NEW.provider WHERE NEW.status IN {ENDED};
    END""",
    f"""CREATE TRIGGER streams_run_rollup_delete AFTER DELETE ON streams_run WHEN OLD.status IN {ENDED} BEGIN
        {MARK} VALUES (OLD.created_at, OLD.model, OLD.provider);
    END""",
    f"""CREATE TRIGGER streams_runflag_rollup_insert AFTER INSERT ON streams_runflag BEGIN
        {MARK} SELECT created_at, model, provider FROM streams_run WHERE id = NEW.run_id AND status IN {ENDED};
    END""",
    f"""CREATE TRIGGER streams_runflag_rollup_delete AFTER DELETE ON streams_runflag BEGIN
        {MARK} SELECT created_at, model, provider FROM streams_run WHERE id = OLD.run_id AND status IN {ENDED};
    END""",
    f"""{MARK} SELECT min(created_at), model, provider FROM streams_run WHERE status IN {ENDED}
        GROUP BY strftime('%Y-%m-%d %H', created_at), model, provider""",
]
SQLITE_BACKWARD = [
    "DROP TRIGGER IF EXISTS streams_run_rollup_insert",
    "DROP TRIGGER IF EXISTS streams_run_rollup_update",
    "DROP TRIGGER IF EXISTS streams_run_rollup_delete",
    "DROP TRIGGER IF EXISTS streams_runflag_rollup_insert",
    "DROP TRIGGER IF EXISTS streams_runflag_rollup_delete",
]


def _run(statements):
    def apply(apps, schema_editor):
        for statement in statements.get(schema_editor.connection.vendor, []):
            schema_editor.execute(statement, None)
    return apply


class Migration(migrations.Migration):
    dependencies = [("streams", "0010_run_gap_p95")]

    operations = [
        migrations.CreateModel(
            name="RollupMark",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("created_at", models.DateTimeField(db_index=True)),
                ("model", models.CharField(max_length=200)),
                ("provider", models.CharField(max_length=64)),
            ],
        ),
        migrations.CreateModel(
            name="RunRollup",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("start", models.DateTimeField()),
                ("span", models.CharField(max_length=4)),
                ("provider", models.CharField(max_length=64)),
                ("model", models.CharField(blank=True, default="", max_length=200)),
                ("every_model", models.BooleanField(default=False)),
                ("runs", models.PositiveIntegerField(default=0)),
                ("failed", models.PositiveIntegerField(default=0)),
                ("incomplete", models.PositiveIntegerField(default=0)),
                ("cancelled", models.PositiveIntegerField(default=0)),
                ("interrupted", models.PositiveIntegerField(default=0)),
                ("flagged", models.PositiveIntegerField(default=0)),
                ("figures", models.JSONField(default=dict)),
                ("histograms", models.JSONField(default=dict)),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("span", "start", "every_model", "provider", "model"),
                                                        name="runrollup_cell_unique")],
            },
        ),
        migrations.RunPython(_run({"postgresql": POSTGRES_FORWARD, "sqlite": SQLITE_FORWARD}),
                             _run({"postgresql": POSTGRES_BACKWARD, "sqlite": SQLITE_BACKWARD})),
    ]
