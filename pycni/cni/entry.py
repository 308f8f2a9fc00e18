"""The frozen executables' entry point.

VERSION is answered here, before the protocol boundary (pycni.cni.skel) or the plugin loads: the
runtime asks it often (libcni validates every plugin of a list with VERSION), and an answer that
costs no more than the interpreter's own start is the whole point of the check in
tests/cni/test_startup_imports.py.
"""

from __future__ import annotations

import os
import sys

from pycni.cni import versions


def main(module: str) -> None:
    """Serve one CNI call with the plugin module named `module`; exits the process."""
    if os.environ.get("CNI_COMMAND") == "VERSION":
        sys.stdout.write(versions.VERSION_ANSWER)
        sys.stdout.flush()
        sys.exit(0)
    from pycni.cni import skel

    __import__(module)
    skel.main(sys.modules[module])
