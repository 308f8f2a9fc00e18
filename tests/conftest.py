"""The suite's collection rules; the shared fixtures live in tests/support/fixtures.py."""

from __future__ import annotations

import os

pytest_plugins = ["tests.support.fixtures"]

# tests/kernel/ needs a kernel with IPIP: it runs inside the kernel lane's guest, where the lane
# sets PYCNI_KERNEL_LANE=guest (and =collect when the host lists its tests), never in the host
# run; tests/lab/test_kernel_lane.py reports each of its tests.
collect_ignore = [] if os.environ.get("PYCNI_KERNEL_LANE") in ("guest", "collect") else ["kernel"]
