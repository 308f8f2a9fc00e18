"""The CNI error vocabulary: codes from the spec's table and our own (100+), and the exceptions
that carry them to the protocol boundary (pycni.cni.skel), which prints the spec's error JSON.

Codes are plain int constants, not an enum: `enum` costs ~4 ms of a frozen plugin's start-up,
and every CNI call is a fresh process (see docs/design.md, "Start-up is the budget").
"""

from __future__ import annotations


class Code:
    """Error codes: 1-99 from SPEC.md's error table, 100+ pycni's own."""

    INCOMPATIBLE_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENV = 4
    IO_FAILURE = 5
    DECODE_FAILURE = 6
    INVALID_CONFIG = 7
    TRY_AGAIN_LATER = 11
    NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    # pycni's own
    INTERNAL = 100
    RANGE_EXHAUSTED = 101
    ADDRESS_IN_USE = 102
    DUPLICATE_ATTACHMENT = 103
    CHECK_FAILED = 104
    KERNEL = 105
    DELEGATE_FAILED = 106


class CniError(Exception):
    """An error that reaches the runtime as `{cniVersion, code, msg, details}`."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg


class ConfigError(CniError):
    """Invalid network configuration (code 7). `path` is the JSON path of the bad field,
    e.g. `$.ipam.ranges[0][0].subnet`; it goes into `details` so a person can find it."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(Code.INVALID_CONFIG, f"invalid network config: {path}: {problem}", path)
        self.path = path
        self.problem = problem


class UnsupportedField(CniError):
    """A field this plugin does not support (code 2); the message names key and value."""

    def __init__(self, path: str, value: object) -> None:
        super().__init__(
            Code.UNSUPPORTED_FIELD, f"unsupported field {path} = {_short(value)}", path
        )


class EnvError(CniError):
    """A missing or invalid CNI_* environment variable (code 4); the message names it."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(Code.INVALID_ENV, f"{variable}: {problem}", variable)


class VersionError(CniError):
    """The configuration's cniVersion or the verb is not supported at that version (code 1)."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(Code.INCOMPATIBLE_VERSION, msg, details)


class TryAgainLater(CniError):
    """A transient condition, e.g. a lock not obtained in time (code 11)."""

    def __init__(self, msg: str, details: str = "") -> None:
        super().__init__(Code.TRY_AGAIN_LATER, msg, details)


class NotFound(Exception):
    """Something to remove or inspect is already gone (a link, a namespace, a lease).
    Not a failure by itself: DEL and GC treat it as success."""


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
