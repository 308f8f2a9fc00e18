"""Run a program with bytes on stdin and collect its stdout: the plugins' one way to exec.

os.posix_spawn and pipes, not `subprocess`, which imports `signal` (and so `enum`),
`threading` and `selectors` on every plugin call.
"""

from __future__ import annotations

import os


def run(
    argv: list[str], env: dict[str, str], stdin: bytes, *, stderr_to_stdout: bool = False
) -> tuple[int, bytes]:
    """Exit status and stdout of `argv` (argv[0] an absolute path). Its stderr goes to ours (the
    runtime logs it) unless `stderr_to_stdout`."""
    in_r, in_w = os.pipe()
    out_r, out_w = os.pipe()
    actions = [(os.POSIX_SPAWN_DUP2, in_r, 0), (os.POSIX_SPAWN_DUP2, out_w, 1)]
    if stderr_to_stdout:
        actions.append((os.POSIX_SPAWN_DUP2, out_w, 2))
    try:
        pid = os.posix_spawn(argv[0], argv, env, file_actions=actions)
    finally:
        os.close(in_r)
        os.close(out_w)
    try:
        # Programs we run read all of stdin before they answer: writing first cannot deadlock.
        view = memoryview(stdin)
        while view:
            view = view[os.write(in_w, view) :]
    except BrokenPipeError:
        pass  # it exited without reading: its status and output say why
    finally:
        os.close(in_w)
    chunks = []
    try:
        while chunk := os.read(out_r, 65536):
            chunks.append(chunk)
    finally:
        os.close(out_r)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks)
