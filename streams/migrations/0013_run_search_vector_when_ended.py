"""PostgreSQL: a live run's search vector is its input alone; its output joins it when the run leaves
``queued``/``streaming`` (its end, or an interruption); the vector covers the first INPUT_CHARS and
OUTPUT_CHARS of each (a tsvector is limited to 1 MiB). And large values of the event log and of the
runs' texts are compressed with lz4 instead of pglz where the server has it.

A live run rewrites its row every second (counts, heartbeat) and its whole text every five. The
stored vector of its whole output was recomputed on every text rewrite (~1 ms at 1,200 words), and
every row rewrite, changing an indexed column (event_count), put every word of that vector into the
GIN index again: with 1,000 runs at 1,200 words each, 1,000 count updates took 456 ms of PostgreSQL
against 12 ms with the input-only vector, 1,000 text rewrites 1,435 ms against 212 (docs/performance.md,
issue 14 target 5 in scaled mode). So a live run is found by its input, and by its output once it has
ended (it was ~5 s behind while streaming before). SQLite's FTS5 table is unchanged (migration 0005).

pglz compressed each of the ~7 KB events that end a run (the whole text in four of them) and each
text rewrite at a fifth of lz4's speed: a COPY of 4,000 such events took 760 ms against 156 ms. Only
values written from now on are compressed with lz4; both methods are read alike. Changing a generated
column's expression means dropping and adding it, which rewrites the runs table once (as 0006 did).
"""

from django.db import migrations

# PostgreSQL refuses a tsvector over 1 MiB, and the vector is computed in the row's own INSERT and
# UPDATE: a run whose input or output held ~40,000 distinct words could not be created, or ended (it
# stayed streaming). The vector covers the first INPUT_CHARS of the input and OUTPUT_CHARS of the
# output (well under the limit whatever the words); the run keeps all of both.
INPUT_CHARS = 50_000
OUTPUT_CHARS = 150_000
INPUT = f"left(coalesce(request->>'input', request->>'messages', ''), {INPUT_CHARS})"
WHOLE = f"to_tsvector('english'::regconfig, {INPUT} || ' ' || left(output_text, {OUTPUT_CHARS}))"
INPUT_ONLY = f"to_tsvector('english'::regconfig, {INPUT})"
BEFORE = ("to_tsvector('english'::regconfig, coalesce(request->>'input', request->>'messages', '') || ' ' "
          "|| output_text)")  # migration 0006's
LIVE_STATUSES = "('queued', 'streaming')"  # streams.models.ACTIVE_STATUSES
VECTOR = f"CASE WHEN status IN {LIVE_STATUSES} THEN {INPUT_ONLY} ELSE {WHOLE} END"
LZ4_COLUMNS = (("streams_event", "data"), ("streams_run", "output_text"))


def _has_lz4(schema_editor) -> bool:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
        row = cursor.fetchone()
    return bool(row and row[0])


def _vector_column(schema_editor, expression: str, compression: str) -> None:
    schema_editor.execute("DROP INDEX IF EXISTS run_search_gin")
    schema_editor.execute("ALTER TABLE streams_run DROP COLUMN IF EXISTS search_vector")
    schema_editor.execute(f"ALTER TABLE streams_run ADD COLUMN search_vector tsvector {compression}"
                          f" GENERATED ALWAYS AS ({expression}) STORED")
    schema_editor.execute("CREATE INDEX run_search_gin ON streams_run USING gin (search_vector)")


def forward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    lz4 = _has_lz4(schema_editor)
    _vector_column(schema_editor, VECTOR, "COMPRESSION lz4" if lz4 else "")
    if lz4:
        for table, column in LZ4_COLUMNS:
            schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION lz4")


def backward(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    if _has_lz4(schema_editor):  # SET COMPRESSION is PostgreSQL 14's, as lz4 is; forward set it only then
        for table, column in LZ4_COLUMNS:
            schema_editor.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION default")
    _vector_column(schema_editor, BEFORE, "")


class Migration(migrations.Migration):
    dependencies = [("streams", "0012_event_run_index_dropped")]

    operations = [migrations.RunPython(forward, backward)]
