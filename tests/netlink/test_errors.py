"""pycni.netlink.errors: what a failed request says, the project's way, and which CNI error
code it carries."""

from __future__ import annotations

import errno

from pycni.cni.errors import CniError, Code, NotFound
from pycni.netlink import NamespaceNotFound, NetlinkError, NetlinkNotFound
from tests.support.netlink import expect


def test_errors_say_what_failed_the_project_way() -> None:
    error = NetlinkNotFound(errno.ENODEV, "delete link 'veth1'")
    assert str(error) == "failed to delete link 'veth1': No such device"
    assert isinstance(error, NetlinkError) and isinstance(error, NotFound)
    assert isinstance(error, CniError) and error.code == Code.KERNEL
    expect(error, errno=errno.ENODEV, what="delete link 'veth1'", strerror="No such device")
    unsupported = NetlinkError(errno.EOPNOTSUPP, "create ipip tunnel 't0'", "Unknown device type")
    assert str(unsupported) == (
        "failed to create ipip tunnel 't0': Operation not supported (Unknown device type)"
    )
    missing = NamespaceNotFound("/run/netns/gone")
    assert isinstance(missing, NotFound) and missing.code == Code.UNKNOWN_CONTAINER
    assert (
        str(missing)
        == "failed to open network namespace '/run/netns/gone': no such file or directory"
    )
