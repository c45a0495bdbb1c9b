"""Log lines under Daphne: its command line configures logging before the app loads."""

import logging
import logging.config

from django.conf import settings


def test_each_log_line_is_printed_once_under_daphnes_logging_setup(capsys):
    root = logging.getLogger()
    names = ("streams", "dashboard", "simulator", "daphne")
    saved = (root.handlers[:], root.level, {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level)
                                             for n in names})
    try:
        logging.basicConfig(force=True, level=logging.INFO, format="%(message)s")  # what `daphne` does first
        logging.config.dictConfig(settings.LOGGING)  # then Django's set-up
        logging.getLogger("streams.live.test").info("a line of ours")
        logging.getLogger("daphne.server").info("a line of daphne's")
        logging.getLogger("httpx").info("a request line")  # libraries below WARNING stay quiet
        err = capsys.readouterr().err
        assert err.count("a line of ours") == 1
        assert err.count("a line of daphne's") == 1
        assert "a request line" not in err
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        for name, (handlers, level) in saved[2].items():
            logging.getLogger(name).handlers[:] = handlers
            logging.getLogger(name).setLevel(level)
