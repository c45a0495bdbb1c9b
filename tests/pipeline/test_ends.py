"""The ends of many runs are written in statements of at most ends.ROWS_PER_STATEMENT runs: one
statement of 1,000 ends (each with its run's whole output text) left ~12 MiB more in the writing
thread's heap (streams/pipeline/ends.py)."""

from __future__ import annotations

import pytest
from asgiref.sync import sync_to_async
from django.utils import timezone

from streams.models import Run, RunStatus
from streams.pipeline import ends, store
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db(transaction=True)


async def test_many_ends_go_in_statements_of_a_few_dozen_runs_each_with_its_own_values(user, monkeypatch):
    first = await sync_to_async(make_run)(user, status=RunStatus.STREAMING)
    await sync_to_async(Run.objects.bulk_create)(
        [Run(owner_id=first.owner_id, provider="simulator", model="m", status=RunStatus.STREAMING)
         for _ in range(299)])
    ids = [pk async for pk in Run.objects.order_by("pk").values_list("pk", flat=True)]
    sizes = []
    real = store._update_statement
    monkeypatch.setattr(store, "_update_statement", lambda *args: (sizes.append(args[-1]), real(*args))[1])
    done = timezone.now()
    await sync_to_async(ends.end_runs)([(pk, {"status": RunStatus.COMPLETED, "output_text": f"text of {pk}",
                                              "metrics": {"events": i}, "event_count": i, "finished_at": done})
                                        for i, pk in enumerate(ids)])
    assert sizes and max(sizes) <= ends.ROWS_PER_STATEMENT  # not one statement of 250 runs or more
    rows = {pk: row async for pk, *row in Run.objects.values_list("pk", "status", "output_text", "metrics",
                                                                  "event_count", "finished_at")}
    assert len(rows) == 300
    for i, pk in enumerate(ids):
        assert rows[pk] == [RunStatus.COMPLETED, f"text of {pk}", {"events": i}, i, done]
