"""Browser-test helpers that are not fixtures: where screenshots go, and taking one."""

from __future__ import annotations

from tests.support.servers import ROOT

ARTIFACTS = ROOT / "test-artifacts"


def screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
