"""The CI guard in conftest.py: under CI=true a skipped test fails the session (a skip there is
a missing venv, wheel or data set), while a local run may skip."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _run(tmp_path: Path, ci: str | None) -> subprocess.CompletedProcess:
    shutil.copy(HERE / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_probe.py").write_text(
        "import pytest\n\ndef test_skips():\n    pytest.skip('no venv here')\n\n"
        "def test_passes():\n    assert True\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tmp_path)]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


def test_a_skip_fails_the_session_under_ci(tmp_path):
    proc = _run(tmp_path, "true")
    assert proc.returncode == 1, proc.stdout
    assert "test_probe.py::test_skips: Skipped: no venv here" in proc.stdout


def test_a_skip_is_allowed_outside_ci(tmp_path):
    for ci in (None, "false"):
        assert _run(tmp_path, ci).returncode == 0
