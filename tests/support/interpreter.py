"""Programs run in a fresh interpreter of the tests' own venv, from the checkout: what importing
or running a module loads, measured apart from the test process (which has loaded everything).

    loaded = python_output("import pycni.netlink\nprint(*sys.modules)", isolated=True)
"""

from __future__ import annotations

import subprocess
import sys

from tests.support.paths import REPO


def python_output(program: str, *args: str, isolated: bool = False, timeout: float = 60) -> str:
    """The stdout of `python -c program args...` run in the checkout; the test fails with the
    program's stderr when it exits non-zero.

    isolated: `python -I -S`, as a frozen plugin starts: no site (so not the editable
    install's finder, which loads `re`, `enum`, ... itself), no PYTHON* environment, and only
    the checkout put first on sys.path, by `import sys` ahead of `program` (which may use it).
    Otherwise `python -c` as a person types it."""
    flags = ["-I", "-S"] if isolated else []
    if isolated:
        program = f"import sys\nsys.path.insert(0, {str(REPO)!r})\n{program}"
    done = subprocess.run(
        [sys.executable, *flags, "-c", program, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    command = " ".join(["python", *flags, "-c", "..."])
    assert done.returncode == 0, f"{command} exited {done.returncode}:\n{done.stderr}"
    return done.stdout
