"""Undo-as-you-go for ADD: a failed ADD leaves nothing behind.

    with Rollback() as undo:
        lease = ipam_add(...)
        undo.push(ipam_del)
        veth = create_veth(...)
        undo.push(delete_link, veth.name)
        ...
        undo.commit()          # success: keep everything

Leaving the block without commit() runs the undo steps newest first; an undo step that fails
is written to the call's log (pycni.cni.log: stderr and logFile) and does not stop the others
(the original error is what the runtime sees). Not contextlib.ExitStack: contextlib costs a
frozen plugin ~2 ms of start-up.
"""

from __future__ import annotations

from pycni.cni import log

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any


class Rollback:
    def __init__(self) -> None:
        self._steps: list[tuple[Callable[..., object], tuple[Any, ...]]] = []

    def push(self, undo: Callable[..., object], *args: Any) -> None:
        self._steps.append((undo, args))

    def commit(self) -> None:
        self._steps.clear()

    def __enter__(self) -> Rollback:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        while self._steps:
            undo, args = self._steps.pop()
            try:
                undo(*args)
            except Exception as err:  # keep undoing; the first failure is the one to report
                name = getattr(undo, "__name__", repr(undo))
                log.write(f"rollback: {name}{args!r} failed: {err}")
