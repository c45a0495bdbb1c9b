"""The review queue's fast paths (next_in_queue, count_waiting) agree with the full queue order."""

import random
from datetime import timedelta

import pytest
from django.utils import timezone

from streams.models import ReviewState, Run, RunStatus, Verdict
from streams.review.verdicts import QueueFilters, count_waiting, next_in_queue, queue_runs
from tests.support.factories import make_run

pytestmark = pytest.mark.django_db


def test_next_and_count_match_the_ordered_queue(user, staff_user, django_user_model):
    other = django_user_model.objects.create_user("dave", password="x", is_staff=True)
    rng = random.Random(7)
    now = timezone.now()
    runs = []
    for _ in range(40):
        status = rng.choice([RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.STREAMING])
        state = rng.choice([ReviewState.UNREVIEWED, ReviewState.FLAGGED, ReviewState.APPROVED])
        run = make_run(user, status=status, review_state=state)
        Run.objects.filter(pk=run.pk).update(created_at=now - timedelta(minutes=rng.randrange(5)),  # ties
                                             model=rng.choice(["a", "b"]))
        runs.append(run)
        for reviewer in rng.sample([staff_user, other], rng.randrange(3)):
            Verdict.objects.create(run=run, reviewer=reviewer, verdict="flagged")
    for trial in range(30):
        reviewer = rng.choice([staff_user, other])
        skipped = [r.pk for r in rng.sample(runs, rng.randrange(6))]
        filters = rng.choice([QueueFilters(), QueueFilters(flagged_only=True), QueueFilters(model="a")])
        full = list(queue_runs(reviewer, filters, skipped))
        found = next_in_queue(reviewer, filters, skipped)
        assert (found.pk if found else None) == (full[0].pk if full else None), trial
        assert count_waiting(reviewer, filters) == len(full)
    assert count_waiting(staff_user, cap=2) == min(3, queue_runs(staff_user).count())
