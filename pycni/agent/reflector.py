"""List and watch one kind of object until stopped, the way client-go's Reflector does: list,
watch from the list's resourceVersion with bookmarks, list again on 410 (the history moved
on), back off on anything else — and never drop what is known while the API server is away.

The owner gets `replace(items)` after each list (the complete state: objects missing from it
were deleted while nobody watched) and `event(type, obj)` for each ADDED / MODIFIED /
DELETED; both run in the reflector's thread; `progress()` after a BOOKMARK. `version` is the
last resourceVersion seen (bookmarks included): a change made in the API at version V is known
once `version` >= V.

Long-lived path (the agent).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from pycni.agent import kube
from pycni.agent.agent import Backoff

log = logging.getLogger("pycni.agent")


class Reflector:
    def __init__(
        self,
        client: kube.Client,
        path: str,
        replace: Callable[[list[dict[str, Any]]], None],
        event: Callable[[str, dict[str, Any]], None],
        *,
        stop: threading.Event,
        progress: Callable[[], None] | None = None,
        backoff: Backoff | None = None,
        watch_timeout: int = 300,
        name: str = "",
    ) -> None:
        self.client = client
        self.path = path
        self.replace = replace
        self.event = event
        self.progress = progress
        self.stop = stop
        self.backoff = backoff or Backoff()
        self.watch_timeout = watch_timeout
        self.name = name or path.rsplit("/", 1)[-1]
        self.version = 0  # the last resourceVersion seen, as a number (0: none yet)
        self.listed = threading.Event()  # set after the first complete list
        self.connected = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"watch-{self.name}", daemon=True)
        self._thread.start()

    def join(self, timeout: float) -> bool:
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                items, version = self.client.list(self.path)
                self.replace(items)
                self._seen(version)
                self.connected = True
                self.listed.set()
                self.backoff.reset()
                log.info("listed %d %s at resourceVersion %s", len(items), self.name, version)
                while not self.stop.is_set():
                    version = self._watch(version)
            except kube.Gone as err:
                log.info("the %s watch expired (410: %s): listing again", self.name, err)
            except kube.ApiError as err:
                self.connected = False
                if self.stop.is_set():
                    break
                delay = self.backoff.next()
                log.warning(
                    "API server unreachable for %s: %s; keeping the last known state;"
                    " retrying in %.1f s",
                    self.name,
                    err,
                    delay,
                )
                self.stop.wait(delay)

    def _watch(self, version: str) -> str:
        for event in self.client.watch(self.path, version, self.watch_timeout):
            kind, obj = event.get("type"), event.get("object")
            if not isinstance(obj, dict):
                continue
            version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
            if kind in ("ADDED", "MODIFIED", "DELETED"):
                try:
                    self.event(str(kind), obj)
                except Exception:  # an object never stops the watch (the owner logs its own)
                    log.exception("failed to take in a %s %s event", self.name, kind)
            self._seen(version)
            if kind == "BOOKMARK" and self.progress is not None:
                self.progress()
            if self.stop.is_set():
                break
        return version

    def _seen(self, version: str) -> None:
        try:
            self.version = max(self.version, int(version))
        except ValueError:
            pass  # resourceVersions are opaque; the stand-in's and etcd's are numbers
