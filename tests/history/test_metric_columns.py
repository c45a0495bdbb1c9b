"""The indexed figures on Run are filled at the run's end, from the same metrics the run stores."""

import pytest

from streams.live.executor import RunExecutor
from streams.models import Run, RunStatus
from tests.support.upstreams import Script, sse, text_stream

pytestmark = pytest.mark.django_db(transaction=True)


async def test_final_flush_fills_the_columns_from_the_metrics(upstream, user):
    body = sse(*text_stream(["Hel", "lo"]))
    upstream.scripts.append(Script(steps=[(0, body[:50]), (0.02, body[50:])]))
    run = await Run.objects.acreate(owner=user, provider="scripted", model="m",
                                    request={"model": "m", "input": "hi", "stream": True})
    assert await RunExecutor(run.pk).execute() == RunStatus.COMPLETED
    run = await Run.objects.aget(pk=run.pk)
    assert run.ttft_ms == run.metrics["ttft_ms"] is not None
    assert run.ttfc_ms == run.metrics["ttfc_ms"] is not None
    assert run.ttfb_ms == run.metrics["ttfb_ms"] and run.ttfb_ms <= run.ttfc_ms
    assert run.duration_ms == run.metrics["duration_ms"] >= run.ttft_ms
    assert run.tokens_per_s == run.metrics["tokens_per_s"]
    assert run.gap_p95_ms == run.metrics["gap_p95_ms"] is not None
    assert run.ttfr_ms is None and run.ttfa_ms is None
