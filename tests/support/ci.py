"""What a test does when it cannot run: says so loudly. On a developer's machine that is a skip
with the reason; in CI (CI=true, set by .ci/run, which installs everything the tests need) it is
a failure, so that nothing CI should run can pass as skipped."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str) -> NoReturn:
    """Skip (loudly, with the reason) on a developer's machine; fail in CI."""
    if IN_CI:
        pytest.fail(f"cannot run in CI: {reason}")
    pytest.skip(reason)
