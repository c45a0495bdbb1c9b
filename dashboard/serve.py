"""Start Daphne on the chosen event loop: ``python -m dashboard.serve <Daphne's own arguments>``.

    .venv/bin/python -m dashboard.serve -b 127.0.0.1 -p 8000 dashboard.asgi:application

Daphne runs Twisted's asyncio reactor on a loop it makes with ``asyncio.new_event_loop()`` when
``daphne.server`` is first imported, before the application is loaded: too early for
``dashboard/asgi.py`` to choose. This launcher sets the loop policy first (``STREAMSCOPE_EVENT_LOOP``:
asyncio's loop by default, uvloop on request; :mod:`streams.event_loop`), then hands the command line
to Daphne's CLI unchanged. The tests and benchmarks start Daphne with it, so one variable switches a
whole stack's loop for a comparison; with the default it serves exactly as ``daphne ...`` does.
"""

from __future__ import annotations

import sys

# Nothing that imports Twisted's reactor or Django may come before the policy is set.
from streams.event_loop import EventLoopChoiceError, use_chosen_loop


def main(argv: list[str] | None = None) -> None:
    try:
        use_chosen_loop()
    except EventLoopChoiceError as exc:
        raise SystemExit(f"python -m dashboard.serve: {exc}") from exc
    from daphne.cli import CommandLineInterface

    CommandLineInterface().run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    main()
