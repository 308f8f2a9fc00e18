"""The kernel's uapi headers (/usr/include/linux, from linux-libc-dev): the numbers pycni's own
tables of netlink and nftables constants are checked against."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.ci import unavailable

HEADERS = Path("/usr/include/linux")


def header_values(*names: str) -> dict[str, int]:
    """Enumerators and numeric #defines of the headers `names` (paths under HEADERS), read in
    that order; unavailable() when one is missing."""
    for name in names:
        if not (HEADERS / name).exists():
            unavailable(f"{HEADERS / name} missing: apt-get install linux-libc-dev")
    values: dict[str, int] = {}
    for name in names:
        text = re.sub(r"/\*.*?\*/", "", (HEADERS / name).read_text(), flags=re.S)
        for define in re.finditer(r"#define\s+(\w+)\s+([^\n]*)", text):
            number = _number(define.group(2), values)
            if number is not None:
                values.setdefault(define.group(1), number)
        for body in re.findall(r"enum\s*\w*\s*\{(.*?)\}", text, flags=re.S):
            current = -1
            for raw in body.split(","):
                item = " ".join(
                    line for line in raw.splitlines() if not line.strip().startswith("#")
                )
                found = re.match(r"\s*(\w+)\s*(?:=\s*(.+?))?\s*$", item)
                if not found:
                    continue
                number = None if found.group(2) is None else _number(found.group(2), values)
                current = current + 1 if number is None else number
                values[found.group(1)] = current
    return values


def _number(text: str, known: dict[str, int]) -> int | None:
    """A #define's or an enumerator's value: a literal (0x1F, -1, 0xFFFFFFFFU), 1 << n, or a
    name defined before; None for anything else (a macro, an expression)."""
    text = text.strip().strip("()").strip()
    text = re.sub(r"(?<=[0-9a-fA-F])U$", "", text)
    shift = re.fullmatch(r"1\s*<<\s*(\d+)", text)
    if shift:
        return 1 << int(shift.group(1))
    if re.fullmatch(r"-?(?:0x[0-9a-fA-F]+|\d+)", text):
        return int(text, 0)
    return known.get(text)
