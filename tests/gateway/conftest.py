"""Gateway fixtures: an open simulator in a real Daphne (the upstream), a token for alice."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import start_daphne, stop_process


@pytest.fixture(scope="session")
def open_sim(tmp_path_factory) -> Iterator[str]:
    """A Daphne serving the simulator to anyone (STREAMSCOPE_SIMULATOR_OPEN): the upstream of the
    in-process gateway tests, whose own internal simulator key that process would not know."""
    var_dir = tmp_path_factory.mktemp("gateway-sim")
    process, base_url = start_daphne(var_dir, {"STREAMSCOPE_SIMULATOR_OPEN": "1"})
    try:
        yield base_url + "/sim/v1"
    finally:
        stop_process(process)


@pytest.fixture
def sim_upstream(open_sim, settings) -> str:
    settings.STREAMSCOPE_SIMULATOR_URL = open_sim
    return open_sim


@pytest.fixture
def token(user) -> str:
    from dashboard.tokens import issue_token

    return issue_token(user, "tests")[1]


@pytest.fixture(autouse=True)
def _fresh_moderation_rules():
    """The gateway keeps the enabled rules for a second; a test's rolled-back rules must not outlive it."""
    from streams.gateway.proxy import forget_rules

    forget_rules()
    yield
    forget_rules()
