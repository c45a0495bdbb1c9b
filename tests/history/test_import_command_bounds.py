"""``manage.py import_stream`` reads at most the import limit: the size a
pipe, a FIFO or a device reports is no bound (``/dev/zero`` reports 0 and never ends)."""

from __future__ import annotations

import os
import threading
import time

import pytest
from django.core.management import CommandError, call_command

from streams.models import Run

LIMIT = 64 * 1024
EVENT = (
    'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":1,'
    '"output_index":0,"content_index":0,"item_id":"m","delta":"x"}\n\n'
)


@pytest.fixture(autouse=True)
def small_limit(settings):
    settings.STREAMSCOPE_MAX_IMPORT_BYTES = LIMIT


@pytest.mark.django_db
@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
def test_dev_zero_is_refused_after_reading_at_most_the_limit(user):
    started = time.monotonic()
    with pytest.raises(CommandError, match="import limit"):
        call_command("import_stream", "/dev/zero", "--user", "alice")
    assert time.monotonic() - started < 5
    assert not Run.objects.exists()


def _feed_fifo(path, payload: bytes, repeat: int = 1) -> tuple[threading.Thread, list[int]]:
    """Write ``payload`` ``repeat`` times into the FIFO at ``path`` until the reader hangs up;
    the returned list holds how many bytes went in."""
    written = [0]

    def write():
        try:
            with open(path, "wb") as fifo:
                for _ in range(repeat):
                    fifo.write(payload)
                    written[0] += len(payload)
        except BrokenPipeError:  # the reader stopped at the limit: expected
            pass

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread, written


@pytest.mark.django_db
def test_a_fifo_is_read_no_further_than_the_limit(user, tmp_path):
    fifo = tmp_path / "stream.sse"
    os.mkfifo(fifo)
    chunk = (EVENT * (LIMIT // len(EVENT))).encode()
    # Up to 64 MiB, as good as endless here: the reader must hang up long before.
    writer, written = _feed_fifo(fifo, chunk, repeat=(64 * 1024 * 1024) // len(chunk))
    with pytest.raises(CommandError, match="import limit"):
        call_command("import_stream", str(fifo), "--user", "alice")
    writer.join(5)
    assert written[0] < LIMIT + 1024 * 1024  # the limit, plus what the pipe buffers held
    assert not Run.objects.exists()


@pytest.mark.django_db
def test_a_fifo_within_the_limit_is_imported(user, tmp_path, capsys):
    fifo = tmp_path / "stream.sse"
    os.mkfifo(fifo)
    writer, _ = _feed_fifo(fifo, (EVENT * 10).encode())
    call_command("import_stream", str(fifo), "--user", "alice")
    writer.join(5)
    run = Run.objects.get()
    assert run.event_count == 10
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(run.pk)


@pytest.mark.django_db
def test_a_regular_file_of_exactly_the_limit_is_read_and_one_byte_more_is_refused(user, tmp_path):
    body = EVENT * (LIMIT // len(EVENT))
    body += " " * (LIMIT - len(body))  # pad to exactly LIMIT bytes (trailing whitespace is ignored)
    path = tmp_path / "exact.sse"
    path.write_text(body)
    assert path.stat().st_size == LIMIT
    call_command("import_stream", str(path), "--user", "alice")
    path.write_text(body + " ")
    with pytest.raises(CommandError, match="import limit"):
        call_command("import_stream", str(path), "--user", "alice")
