"""PostgreSQL's tsvector is limited to 1 MiB, and the generated search_vector is computed in the
row's own INSERT/UPDATE, so a run whose input (at its creation) or output (at its end) has ~40,000
distinct words could not be stored at all: the INSERT failed, or the end's UPDATE failed and the run
stayed streaming (found by review, older than migration 0013). The vector covers the first characters of each
(migration 0013); the run keeps all of both, and is found by a word among them."""
import textwrap

from tests.support.scaled import scaled_out_marks, script_on_new_deployment

pytestmark = scaled_out_marks()

SCRIPT = textwrap.dedent("""
    import hashlib, json
    from django.contrib.auth.models import User
    from django.db import transaction
    from streams.models import Run, RunStatus
    from streams.pipeline import ends, store
    owner = User.objects.get(username="alice")
    words = " ".join(hashlib.md5(str(i).encode()).hexdigest() for i in range(45000))  # ~1.5 MB
    result = {}
    try:
        with transaction.atomic():
            Run.objects.create(owner=owner, provider="simulator", model="m", status=RunStatus.STREAMING,
                               request={"model": "m", "input": words})
        result["insert"] = "ok"
    except Exception as exc:
        result["insert"] = type(exc).__name__
    run = Run.objects.create(owner=owner, provider="simulator", model="m", status=RunStatus.STREAMING,
                             request={"model": "m", "input": "hi"})
    store.update_runs([(run.pk, {"event_count": 3, "output_text": words})])  # live: input-only vector, fine
    try:
        ends.end_runs([(run.pk, {"status": RunStatus.COMPLETED, "output_text": words, "finished_at": store.now()})])
        result["end"] = "ok"
    except Exception as exc:
        result["end"] = type(exc).__name__
    result["status_after"] = Run.objects.get(pk=run.pk).status
    result["kept"] = len(Run.objects.get(pk=run.pk).output_text) == len(words)
    from streams.history.fleet import search
    first = hashlib.md5(b"0").hexdigest()
    result["found"] = run.pk in set(search(Run.objects.all(), first).values_list("pk", flat=True))
    print("RESULT " + json.dumps(result))
""")


def test_a_run_with_a_huge_distinct_vocabulary_can_be_created_and_ended(tmp_path):
    result = script_on_new_deployment(tmp_path, SCRIPT)
    assert result == {"insert": "ok", "end": "ok", "status_after": "completed", "kept": True, "found": True}, result
