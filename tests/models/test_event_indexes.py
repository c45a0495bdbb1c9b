"""The events table keeps one index for lookups by run: the unique (run, seq) one."""

import pytest
from django.db import connection

from streams.models import Event

pytestmark = pytest.mark.django_db


def indexes():
    with connection.cursor() as cursor:
        return connection.introspection.get_constraints(cursor, Event._meta.db_table)


def test_no_index_on_run_alone_only_the_unique_run_seq_one():
    found = {name: info["columns"] for name, info in indexes().items() if info["index"] or info["unique"]}
    assert ["run_id"] not in found.values()  # each stored event paid for a third b-tree
    assert ["run_id", "seq"] in found.values()


def test_a_runs_events_are_read_through_the_run_seq_index():
    if connection.vendor != "sqlite":
        pytest.skip("the plan is read from SQLite")
    sql, params = Event.objects.filter(run_id=1, seq__gt=5).order_by("seq").values_list("seq").query.sql_with_params()
    with connection.cursor() as cursor:
        plan = " ".join(str(row) for row in cursor.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall())
    assert "sqlite_autoindex_streams_event_1" in plan  # the unique (run, seq) index
    assert "TEMP B-TREE" not in plan  # no sort: the index gives seq order
