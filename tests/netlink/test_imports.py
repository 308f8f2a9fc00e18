"""What importing pycni.netlink costs: no module that would cost every plugin call
milliseconds (the per-call path imports pycni.netlink), and entering a namespace loads only the
C half of ctypes."""

from __future__ import annotations

import os

import pytest

from pycni.lab.netns import Netns
from tests.support.interpreter import python_output

FORBIDDEN = frozenset(
    (
        "re",
        "enum",
        "typing",
        "dataclasses",
        "json",
        "ipaddress",
        "socket",
        "logging",
        "inspect",
        "functools",
        "collections",
        "contextlib",
        "subprocess",
        "ctypes",
        "asyncio",
        "pyroute2",
        "ast",
        "traceback",
        "threading",
    )
)


def _modules_after(code: str) -> set[str]:
    """The modules loaded by `code` in a fresh `python -I -S` (nothing preloaded by site)."""
    return set(python_output(f"{code}\nprint(*sorted(sys.modules))", isolated=True).split())


def _forbidden(modules: set[str]) -> list[str]:
    return sorted({name.split(".")[0] for name in modules} & FORBIDDEN)


def test_importing_netlink_loads_no_forbidden_module() -> None:
    modules = _modules_after("import pycni.netlink\npycni.netlink.Rtnl")
    assert not _forbidden(modules), f"import pycni.netlink loads {_forbidden(modules)}"
    assert "_ctypes" not in modules  # only entering a namespace loads it


def test_importing_netlink_with_site_adds_no_forbidden_module() -> None:
    """`python -c` as a person would type it; site (the editable install's finder) has
    loaded `re`, `enum`, ... before, so what counts is what the import adds."""
    program = (
        "import sys\nbefore = set(sys.modules)\nimport pycni.netlink\npycni.netlink.Rtnl\n"
        "print(*sorted(set(sys.modules) - before))"
    )
    added = set(python_output(program).split())
    assert "pycni.netlink.rtnl" in added
    assert not _forbidden(added), f"import pycni.netlink adds {_forbidden(added)}"


@pytest.mark.netns
def test_entering_a_namespace_loads_only_the_c_half_of_ctypes(netns: Netns) -> None:
    modules = _modules_after(
        f"import pycni.netlink\nwith pycni.netlink.Rtnl(netns={netns.path!r}) as rt:\n"
        "    rt.links()"
    )
    assert not _forbidden(modules), f"Rtnl(netns=...) loads {_forbidden(modules)}"
    if not hasattr(os, "setns"):  # Python 3.11
        assert "_ctypes" in modules
