"""Run.source: where a run came from. Existing runs: imported ones are "import", members of a
fan-out group "fanout", everything else "playground" (the only other way runs were made)."""

from django.db import migrations, models


def backfill(apps, schema_editor):
    Run = apps.get_model("streams", "Run")
    Run.objects.filter(imported=True).update(source="import")
    Run.objects.filter(group_membership__isnull=False).update(source="fanout")


class Migration(migrations.Migration):

    dependencies = [
        ("streams", "0003_review"),
    ]

    operations = [
        migrations.AddField(
            model_name="run",
            name="source",
            field=models.CharField(
                choices=[("playground", "Playground"), ("gateway", "Gateway"), ("import", "Import"), ("fanout", "Fanout")],
                db_index=True, default="playground", max_length=16,
            ),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
    ]
