"""The code base passes ruff's lint and format checks (configured in pyproject.toml)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PATHS = ["src", "tests", "examples", "benchmarks", "docs"]


def ruff():
    candidate = Path(sys.prefix) / "bin" / "ruff"
    found = str(candidate) if candidate.exists() else shutil.which("ruff")
    if found is None:
        pytest.fail("ruff is not installed; install the 'test' extra")
    return found


@pytest.mark.parametrize("command", [["check"], ["format", "--check"]])
def test_ruff(command):
    result = subprocess.run(
        [ruff(), *command, *PATHS], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
