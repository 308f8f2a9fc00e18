"""tests/kernel/: tests that need a kernel with IPIP. They run only inside the kernel lane's
User-Mode Linux guest (pycni/lab/uml.py), booted once per session by
tests/lab/test_kernel_lane.py, which reports each of them as a host test. The host run does not
collect this directory (tests/conftest.py); by hand:

    .venv/bin/pycni uml --env PYCNI_KERNEL_LANE=guest -- .venv/bin/python -m pytest tests/kernel
"""

from __future__ import annotations

import os

import pytest

from tests.support.ci import unavailable


@pytest.fixture(autouse=True)
def _in_the_guest() -> None:
    if os.environ.get("PYCNI_KERNEL_LANE") != "guest":
        unavailable(
            "tests/kernel runs inside the kernel lane's guest: tests/lab/test_kernel_lane.py or"
            " `pycni uml -- python -m pytest tests/kernel`"
        )
