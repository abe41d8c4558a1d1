"""Tests that need a tool the machine may lack (Prometheus, a container engine)."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def unavailable(message: str) -> NoReturn:
    """Skip, saying why, on a developer's machine without the tool; in CI, where `.ci/run`
    installs it, a missing tool is a broken set-up and fails the test."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)
