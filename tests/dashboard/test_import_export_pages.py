"""The import form (/runs/import/) and the export downloads (/runs/<id>/export.sse|jsonl)."""

from __future__ import annotations

import base64
import json

import pytest
from asgiref.sync import sync_to_async
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import AsyncClient, Client

from streams.history.export import export_jsonl, export_sse
from streams.history.importer import import_stream
from streams.models import Run

SSE = (
    "event: response.created\n"
    'data: {"type":"response.created","sequence_number":0,'
    '"response":{"id":"resp_1","model":"gpt-x","status":"in_progress","output":[]}}\n\n'
    "event: response.output_text.delta\n"
    'data: {"type":"response.output_text.delta","sequence_number":1,"item_id":"m","output_index":0,'
    '"content_index":0,"delta":"Hi"}\n\n'
    "event: response.brand_new_type\n"
    'data: {"type":"response.brand_new_type","sequence_number":2}\n\n'
    "event: response.completed\n"
    'data: {"type":"response.completed","sequence_number":3,'
    '"response":{"id":"resp_1","model":"gpt-x","status":"completed",'
    '"output":[{"type":"message","id":"m","role":"assistant","status":"completed",'
    '"content":[{"type":"output_text","text":"Hi","annotations":[]}]}]}}\n\n'
)


def upload(name: str, content: bytes | str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, content.encode() if isinstance(content, str) else content)


@pytest.fixture
def alice(client: Client, user) -> Client:
    client.force_login(user)
    return client


# -- the form -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_import_page_needs_login(client):
    response = client.get("/runs/import/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/login/")
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_import_page_shows_a_multipart_form_with_csrf(alice):
    response = alice.get("/runs/import/")
    assert response.status_code == 200
    html = response.content.decode()
    assert 'enctype="multipart/form-data"' in html
    assert "csrfmiddlewaretoken" in html
    assert "50.0 MB" in html  # the limit is stated up front


@pytest.mark.django_db
def test_import_refuses_a_post_without_csrf_token(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    response = client.post("/runs/import/", {"file": upload("a.sse", SSE)})
    assert response.status_code == 403
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_import_with_csrf_token_succeeds(user):
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    token = client.get("/runs/import/").cookies["csrftoken"].value
    response = client.post("/runs/import/", {"csrfmiddlewaretoken": token, "file": upload("a.sse", SSE)})
    assert response.status_code == 302
    assert Run.objects.get().owner == user


@pytest.mark.django_db
def test_sse_upload_becomes_an_imported_run_and_the_run_page_says_so(alice, user):
    response = alice.post("/runs/import/", {"file": upload("openai stream.sse", SSE)})
    run = Run.objects.get()
    assert response.status_code == 302
    assert response["Location"] == f"/runs/{run.pk}/"
    assert (run.owner, run.imported, run.source_name, run.status) == (user, True, "openai stream.sse", "completed")
    assert run.output_text == "Hi"
    assert run.events.count() == 4
    page = alice.get(response["Location"]).content.decode()
    assert f"Imported 4 events from openai stream.sse as run {run.pk} (completed)." in page
    assert "format: sse" in page  # an import note
    assert "response.brand_new_type" in page  # the unknown type is noted
    assert "imported from openai stream.sse" in page


@pytest.mark.django_db
def test_import_notes_are_shown_once(alice):
    response = alice.post("/runs/import/", {"file": upload("a.sse", SSE)})
    assert "format: sse" in alice.get(response["Location"]).content.decode()
    assert "format: sse" not in alice.get(response["Location"]).content.decode()


@pytest.mark.django_db
def test_har_upload_imports_its_event_stream(alice):
    har = {"log": {"entries": [{
        "startedDateTime": "2026-01-01T00:00:00.000Z", "time": 120.0,
        "request": {"method": "POST", "url": "https://api.openai.com/v1/responses",
                    "postData": {"mimeType": "application/json",
                                 "text": json.dumps({"model": "gpt-x", "input": "hey", "stream": True})}},
        "response": {"status": 200, "content": {"mimeType": "text/event-stream", "encoding": "base64",
                                                "text": base64.b64encode(SSE.encode()).decode()}},
        "timings": {"blocked": 1, "dns": 1, "connect": 1, "send": 1, "wait": 40, "receive": 76},
    }]}}
    response = alice.post("/runs/import/", {"file": upload("session.har", json.dumps(har))})
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.request["input"] == "hey"
    assert run.output_text == "Hi"


@pytest.mark.django_db
def test_jsonl_export_imports_back_through_the_form(alice, user):
    original = import_stream(SSE.encode(), owner=user, filename="a.sse")
    exported = "".join(export_jsonl(original))
    response = alice.post("/runs/import/", {"file": upload("run.jsonl", exported)})
    assert response.status_code == 302
    copy = Run.objects.exclude(pk=original.pk).get()
    assert list(copy.events.values_list("seq", "type", "data")) == \
        list(original.events.values_list("seq", "type", "data"))


@pytest.mark.django_db
def test_a_file_that_is_no_stream_shows_the_reason(alice):
    response = alice.post("/runs/import/", {"file": upload("notes.txt", "just some words\nnothing else\n")})
    assert response.status_code == 200
    html = response.content.decode()
    assert "Could not import notes.txt: not a recognised stream format" in html
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_an_empty_file_or_no_file_is_refused(alice):
    assert "The submitted file is empty." in alice.post(
        "/runs/import/", {"file": upload("e.sse", b"")}).content.decode()
    response = alice.post("/runs/import/", {})
    assert response.status_code == 200
    assert "This field is required." in response.content.decode()
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_an_oversized_upload_is_cut_off_with_a_clear_message(alice, settings):
    settings.STREAMSCOPE_MAX_IMPORT_BYTES = 200
    response = alice.post("/runs/import/", {"file": upload("big.sse", SSE * 3)})
    assert response.status_code == 200
    html = response.content.decode()
    assert "The file is larger than the import limit of 200 bytes." in html
    assert Run.objects.count() == 0


@pytest.mark.django_db
def test_a_declared_length_far_over_the_limit_is_refused_before_reading(alice, settings):
    settings.STREAMSCOPE_MAX_IMPORT_BYTES = 10
    response = alice.generic("POST", "/runs/import/", b"x" * 70_000, content_type="multipart/form-data; boundary=zz")
    assert response.status_code == 200
    assert "The upload is 68.4 KB; the import limit is 10 bytes." in response.content.decode()


@pytest.mark.django_db
def test_http_error_body_imports_as_a_failed_run(alice, recordings):
    path = recordings / "http-400-error-body.json"
    response = alice.post("/runs/import/", {"file": upload(path.name, path.read_bytes())})
    assert response.status_code == 302
    run = Run.objects.get()
    assert run.status == "failed"
    assert "decimal below minimum value" in run.error["message"]


@pytest.mark.django_db
def test_run_list_links_to_the_import_form_and_run_page_to_the_exports(alice, user):
    assert 'href="/runs/import/"' in alice.get("/runs/").content.decode()
    run = import_stream(SSE.encode(), owner=user, filename="a.sse")
    html = alice.get(f"/runs/{run.pk}/").content.decode()
    assert f'href="/runs/{run.pk}/export.sse"' in html
    assert f'href="/runs/{run.pk}/export.jsonl"' in html


# -- exports ----------------------------------------------------------------------------------


async def body_of(response) -> bytes:
    return b"".join([chunk async for chunk in response.streaming_content])


async def logged_in(user) -> AsyncClient:
    client = AsyncClient()
    await sync_to_async(client.force_login)(user)
    return client


@pytest.mark.django_db(transaction=True)
async def test_exports_stream_sse_and_jsonl_to_the_owner(user, monkeypatch):
    monkeypatch.setattr("dashboard.pages.exports.EXPORT_BATCH", 2)  # several trips to the database
    run = await sync_to_async(import_stream)(SSE.encode(), owner=user, filename="a.sse")
    client = await logged_in(user)
    sse = await client.get(f"/runs/{run.pk}/export.sse")
    assert sse.status_code == 200
    assert sse.streaming
    assert sse["Content-Type"] == "text/event-stream; charset=utf-8"
    assert sse["Content-Disposition"] == f'attachment; filename="run-{run.pk}.sse"'
    assert (await body_of(sse)).decode() == SSE
    jsonl = await client.get(f"/runs/{run.pk}/export.jsonl")
    assert jsonl["Content-Disposition"] == f'attachment; filename="run-{run.pk}.jsonl"'
    expected = await sync_to_async(lambda: "".join(export_jsonl(run)))()
    assert (await body_of(jsonl)).decode() == expected
    assert expected.count("\n") == 5  # header + 4 events


@pytest.mark.django_db(transaction=True)
async def test_exports_are_for_the_owner_and_staff_only(user, other_user, staff_user):
    run = await sync_to_async(import_stream)(SSE.encode(), owner=user, filename="a.sse")
    stranger = await logged_in(other_user)
    for fmt in ("sse", "jsonl"):
        assert (await stranger.get(f"/runs/{run.pk}/export.{fmt}")).status_code == 404
        assert (await stranger.get(f"/runs/99999/export.{fmt}")).status_code == 404
    staff = await logged_in(staff_user)
    response = await staff.get(f"/runs/{run.pk}/export.sse")
    assert response.status_code == 200
    assert (await body_of(response)).decode() == await sync_to_async(lambda: "".join(export_sse(run)))()
    anonymous = await AsyncClient().get(f"/runs/{run.pk}/export.sse")
    assert anonymous.status_code == 302
    assert anonymous["Location"].startswith("/accounts/login/")
    assert (await (await logged_in(user)).post(f"/runs/{run.pk}/export.sse")).status_code == 405
