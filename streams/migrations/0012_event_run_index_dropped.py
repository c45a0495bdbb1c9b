"""Events lose the index on run_id alone: the unique (run, seq) index serves every lookup by run
(its first column), and each stored event paid for a third b-tree (~6 of ~15 us of CPU per event on
SQLite, docs/performance.md). The index is dropped by name rather than by AlterField, which on
SQLite would copy the whole events table into a new one."""

import django.db.models.deletion
from django.db import migrations, models


def drop_run_index(apps, schema_editor):
    connection = schema_editor.connection
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, "streams_event")
    for name, info in constraints.items():
        if info["index"] and not info["unique"] and not info["primary_key"] and info["columns"] == ["run_id"]:
            schema_editor.execute(f"DROP INDEX {schema_editor.quote_name(name)}")


def add_run_index(apps, schema_editor):
    Event = apps.get_model("streams", "Event")
    field = Event._meta.get_field("run")
    schema_editor.execute(schema_editor._create_index_sql(Event, fields=[field]))


class Migration(migrations.Migration):

    dependencies = [
        ("streams", "0011_rollup"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(drop_run_index, add_run_index)],
            state_operations=[
                migrations.AlterField(
                    model_name="event",
                    name="run",
                    field=models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.CASCADE,
                                            related_name="events", to="streams.run"),
                ),
            ],
        ),
    ]
