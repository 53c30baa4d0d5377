"""It keeps the developer's fast set fast: every end-to-end test is marked ``slow``, so
``pytest -m "not slow"`` leaves them out (CI runs everything)."""

from __future__ import annotations

import re
import subprocess
import sys

from connectors import PROJECT_ROOT


def test_every_end_to_end_test_is_marked_slow() -> None:
    collect = ["--collect-only", "-q", "-p", "no:cacheprovider", "-m", "not slow", "tests/e2e"]
    res = subprocess.run(
        [sys.executable, "-m", "pytest", *collect],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    unmarked = [line for line in res.stdout.splitlines() if "::" in line]
    assert unmarked == [], f"mark these @pytest.mark.slow: {unmarked}"
    deselected = re.search(r"(\d+) deselected", res.stdout)
    assert deselected, res.stdout + res.stderr
    assert int(deselected.group(1)) > 0
    assert res.returncode == 5, res.stdout + res.stderr  # pytest: no tests collected


def test_the_slow_marker_is_registered_and_markers_are_strict() -> None:
    pyproject = (PROJECT_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert "--strict-markers" in pyproject
    assert re.search(r'^\s*"slow: ', pyproject, re.M)
