"""Run the front end's unit tests (Node's built-in test runner, tests/js/*.test.mjs) under pytest."""

import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent  # tests/js
ROOT = HERE.parent.parent  # the repository


def test_javascript_unit_tests_pass():
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed; the JavaScript unit tests need it")
    result = subprocess.run([node, "--test", *sorted(str(p) for p in HERE.glob("*.test.mjs"))],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "# fail 0" in result.stdout
