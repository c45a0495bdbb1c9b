"""PostgreSQL search: the tsvector stored in a generated column (GIN-indexed) instead of an index over
the expression. With the expression index, every run the planner checked while walking another index
(newest first, say) had its vector recomputed from the request and output; a stored vector makes that
check cheap, so a common word sorted by date reads a few pages instead of re-parsing thousands of runs.
Adding the column rewrites the table once. SQLite keeps its FTS5 table (migration 0005).
"""

from django.db import migrations

INPUT = "coalesce(request->>'input', request->>'messages', '')"
VECTOR = f"to_tsvector('english'::regconfig, {INPUT} || ' ' || output_text)"


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS run_search_gin")
    schema_editor.execute(f"ALTER TABLE streams_run ADD COLUMN search_vector tsvector GENERATED ALWAYS AS ({VECTOR}) STORED")
    schema_editor.execute("CREATE INDEX run_search_gin ON streams_run USING gin (search_vector)")


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    schema_editor.execute("DROP INDEX IF EXISTS run_search_gin")
    schema_editor.execute("ALTER TABLE streams_run DROP COLUMN IF EXISTS search_vector")
    schema_editor.execute(f"CREATE INDEX run_search_gin ON streams_run USING gin (({VECTOR}))")


class Migration(migrations.Migration):
    dependencies = [("streams", "0005_fleet")]

    operations = [migrations.RunPython(forward, backward)]
