"""The simulator's HTTP tests run against both servers a simulator-only process may use: Daphne
(as before) and uvicorn (``python -m simulator.serve``, what the benchmarks and load generators use)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import start_daphne, start_simulator, stop_process


@pytest.fixture(scope="session", params=["daphne", "uvicorn"])
def sim_server(request, tmp_path_factory) -> Iterator[str]:
    """A real simulator-only process (gate open); yields its simulator base URL (…/sim/v1)."""
    var_dir = tmp_path_factory.mktemp(f"sim-{request.param}")
    if request.param == "daphne":
        process, base_url = start_daphne(var_dir, extra_env={"STREAMSCOPE_SIMULATOR_OPEN": "1"})
    else:
        process, base_url = start_simulator(var_dir)
    try:
        yield base_url + "/sim/v1"
    finally:
        stop_process(process)
