"""Run the front end's unit tests (Node's built-in test runner) as part of pytest."""

import shutil
import subprocess

import pytest

from tests.conftest import ROOT


def test_javascript_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the JavaScript unit tests need it")
    result = subprocess.run([node, "--test", *sorted(str(p) for p in (ROOT / "tests" / "js").glob("*.test.mjs"))],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
