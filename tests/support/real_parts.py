"""The real parts the tests need (Debian's orthanc, dcmtk, chromium, postgresql): found, or
skipped on a developer's machine, but a failure under ``CI=true``, never a skip."""

from __future__ import annotations

import os
import shutil

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}


def require_binary(path: str, package: str) -> str:
    """The path of a Debian-packaged program; skip when absent, but fail under CI=true."""
    found = shutil.which(path) or (
        path if os.path.isfile(path) and os.access(path, os.X_OK) else None
    )
    if found:
        return found
    message = f"{path} not found: apt-get install {package} (scripts/setup --test does)"
    if in_ci():
        pytest.fail(message)
    pytest.skip(message)
    raise AssertionError("unreachable")
