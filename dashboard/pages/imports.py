"""Bringing recorded streams in: the import form.

The form takes SSE text, Streamscope's JSONL export or a HAR file and hands the bytes to
:func:`streams.history.importer.import_stream`. Uploads are cut off at ``STREAMSCOPE_MAX_IMPORT_BYTES``
while they are read, so an oversized file never lands whole in memory or on disk.
"""

from __future__ import annotations

from django import forms
from django.contrib import messages
from django.core.files.uploadhandler import FileUploadHandler, StopUpload
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.views.decorators.csrf import csrf_exempt, csrf_protect
from django.views.decorators.http import require_http_methods

from streams.history.importer import ImportFailed, import_stream, max_import_bytes

# Multipart framing and the other form fields around the file itself.
FORM_OVERHEAD_BYTES = 64 * 1024
ACCEPTED_SUFFIXES = ".sse,.txt,.jsonl,.ndjson,.json,.har"


def human_size(n: int) -> str:
    if n >= 1024 * 1024:
        return f"{n / 1024 / 1024:.1f} MB"
    if n >= 1024:
        return f"{n / 1024:.1f} KB"
    return f"{n} bytes"


def too_large_message(size: int | None, limit: int, what: str = "The file") -> str:
    """``size`` None: reading stopped at the limit, so the real size is unknown."""
    first = (
        f"{what} is {human_size(size)}; the import limit is {human_size(limit)}."
        if size is not None
        else f"{what} is larger than the import limit of {human_size(limit)}."
    )
    return f"{first} Split the recording, or raise STREAMSCOPE_MAX_IMPORT_BYTES on the server."


class LimitedUploadHandler(FileUploadHandler):
    """Stops reading an upload as soon as it passes ``limit`` bytes (the form then says so)."""

    def __init__(self, request: HttpRequest, limit: int) -> None:
        super().__init__(request)
        self.limit = limit
        self.received = 0
        self.too_large = False

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes | None:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.too_large = True
            # Discard the rest of the body instead of resetting the connection, so the
            # browser gets the page that explains the limit.
            raise StopUpload(connection_reset=False)
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler (memory or temporary file) builds the file


class ImportForm(forms.Form):
    file = forms.FileField(
        label="Recorded stream",
        help_text="SSE text, a Streamscope JSONL export or a HAR file",
    )
    har_entry = forms.IntegerField(
        label="HAR entry",
        required=False,
        min_value=0,
        help_text="Only for HAR files with several event streams: which one (0 = the first).",
    )


def _render_form(request: HttpRequest, form: ImportForm, error: str = "") -> HttpResponse:
    # Refusals re-render the form with the reason (status 200, as Django forms do: a page for
    # people, and a 4xx would show up as a console error in the browser).
    context = {
        "form": form,
        "error": error,
        "limit": human_size(max_import_bytes()),
        "accept": ACCEPTED_SUFFIXES,
    }
    return render(request, "import.html", context)


@csrf_exempt  # the CSRF check runs in _import_post, once the upload handler is in place
@require_http_methods(["GET", "POST"])
def import_run(request: HttpRequest) -> HttpResponse:
    if request.method != "POST":
        return _render_form(request, ImportForm())
    limit = max_import_bytes()
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared > limit + FORM_OVERHEAD_BYTES:
        # Nothing is changed by this answer, so it needs no CSRF check and reads no body.
        message = too_large_message(declared, limit, what="The upload")
        return _render_form(request, ImportForm(), message)
    handler = LimitedUploadHandler(request, limit)
    request.upload_handlers.insert(0, handler)
    return _import_post(request, handler)


@csrf_protect
def _import_post(request: HttpRequest, handler: LimitedUploadHandler) -> HttpResponse:
    form = ImportForm(request.POST, request.FILES)
    if handler.too_large:
        message = too_large_message(None, handler.limit)
        return _render_form(request, ImportForm(), message)
    if not form.is_valid():
        return _render_form(request, form)
    upload = form.cleaned_data["file"]
    if upload.size > handler.limit:
        return _render_form(request, ImportForm(), too_large_message(upload.size, handler.limit))
    name = upload.name or ""
    try:
        run = import_stream(
            upload.read(),
            owner=request.user,
            filename=name,
            har_entry=form.cleaned_data["har_entry"],
        )
    except ImportFailed as exc:
        return _render_form(request, form, f"Could not import {name}: {exc}")
    messages.success(
        request,
        f"Imported {run.event_count} events from {name or 'the upload'} "
        f"as run {run.pk} ({run.status}).",
    )
    for note in getattr(run, "import_notes", []):
        messages.info(request, note, extra_tags="import-note")
    return redirect("run_detail", run.pk)
