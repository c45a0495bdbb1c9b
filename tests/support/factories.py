"""Tiny helpers to put runs and events in the database."""

import json

from streams.models import Event, Run, RunStatus


def make_run(owner, status=RunStatus.COMPLETED, events=0, **fields):
    run = Run.objects.create(owner=owner, provider="simulator", model="sim-text",
                             request={"model": "sim-text", "input": "hi", "stream": True}, status=status, **fields)
    add_events(run, range(events))
    return run


def add_events(run, seqs):
    Event.objects.bulk_create(
        Event(run=run, seq=seq, t=float(seq), type="response.output_text.delta",
              data=json.dumps({"type": "response.output_text.delta", "delta": f"w{seq} ", "sequence_number": seq}))
        for seq in seqs
    )
    Run.objects.filter(pk=run.pk).update(event_count=Event.objects.filter(run=run).count())
