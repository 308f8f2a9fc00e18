"""Which CNI spec versions pycni speaks, and what each version allows."""

from __future__ import annotations

CURRENT = "1.1.0"
SUPPORTED = ("0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# The VERSION answer, built once as text: VERSION must cost no more than the interpreter's start,
# so its path imports nothing (not even the JSON encoder).
_QUOTED = ", ".join(f'"{v}"' for v in SUPPORTED)
VERSION_ANSWER = f'{{"cniVersion": "{CURRENT}", "supportedVersions": [{_QUOTED}]}}\n'


def parse(version: str) -> tuple[int, int, int]:
    """ "1.0.0" -> (1, 0, 0). Raises ValueError for anything that is not three numbers."""
    parts = version.split(".")
    if len(parts) != 3 or not all(p.isdigit() and p.isascii() for p in parts):
        raise ValueError(f"'{version}' is not a version of the form MAJOR.MINOR.PATCH")
    return int(parts[0]), int(parts[1]), int(parts[2])


def at_least(version: str, minimum: str) -> bool:
    return parse(version) >= parse(minimum)


# libcni before 1.2 -- containerd 1.6 and 1.7, CRI-O before 1.31, cnitool 1.1 -- implements the
# spec up to 1.0.0: it ignores a list's `cniVersions`, sends `cniVersion` as it is, and cannot
# parse a result newer than this.
LEGACY_LIBCNI_MAX = "1.0.0"
LEGACY_RUNTIMES = "containerd 1.6/1.7, CRI-O < 1.31, cnitool 1.1"

# The first version that has a verb, or a feature of the protocol.
VERB_SINCE = {"ADD": "0.1.0", "DEL": "0.1.0", "CHECK": "0.4.0", "STATUS": "1.1.0", "GC": "1.1.0"}
PREV_RESULT_ON_DEL_SINCE = "0.4.0"
IP_VERSION_FIELD_UNTIL = "0.4.0"  # results up to 0.4.0 carry ips[].version
RESULT_1_1_FIELDS_SINCE = "1.1.0"  # interface mtu/socketPath/pciID, route mtu/advmss/...
