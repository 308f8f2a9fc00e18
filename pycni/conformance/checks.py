"""The checks of the conformance suite, each a function with an id and the spec section it
comes from.

A check receives a `Scope`: a fresh runtime (its own results cache), the network config with
its IPAM state moved into a directory of the scope's own, and pod namespaces made on demand.
Everything a check adds is deleted (DEL, then the namespace) when the check ends, whatever its
verdict, so one check's leftovers cannot decide the next one's. The node namespace, where every
plugin runs, lives for the whole run (del.node-as-found, which compares the node itself, makes
one of its own).

A check returns a line saying what it saw (the verdict is "pass"), or raises `CheckFailed`
(the plugin broke the spec) or `NotApplicable` (the config or the plugins' versions do not
have what the check needs; the message says which). Anything else a check raises -- a plugin
failing where it must succeed -- is a failure too; the runner reports its message.

Leases are observed from outside, without reading any IPAM's files: the scope can make a
"tiny" variant of the config whose IPv4 range holds one or two addresses (host-local's
`ranges`/`subnet` with `rangeStart`/`rangeEnd`). When the range is full an ADD fails; when an
ADD succeeds again, something released an address. Configs whose IPAM has no such range make
those checks not applicable.
"""

from __future__ import annotations

import concurrent.futures
import copy
import enum
import ipaddress
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pycni.cni import versions
from pycni.conformance import nodestate
from pycni.lab import connectivity
from pycni.lab import netns as netns_mod
from pycni.lab.runtime import (
    LEGACY_ATTACHMENTS_KEY,
    VALID_ATTACHMENTS_KEY,
    CniRuntimeError,
    Invocation,
    JSONObject,
    Network,
    PluginError,
    ProblemKind,
    ResultVersionError,
    Runtime,
    invoke,
    load_network,
    plugin_request,
)

POD_NETNS_PREFIX = "pycniconfpod"
FAIL_PLUGIN = "pycni-conformance-fail"  # the harness's own plugin, appended to a chain to fail
PARALLEL_PODS = 6
_PROBE_ATTEMPTS = 4  # IPv6 addresses may still be tentative (DAD) right after ADD
_PROBE_PAUSE = 0.5

# Installed by the runner into its own plugin directory: fails every ADD, is silent otherwise.
FAIL_PLUGIN_SOURCE = r"""#!@PYTHON@ -IS
import json, os, sys
command = os.environ.get("CNI_COMMAND", "")
try:
    version = json.loads(sys.stdin.read()).get("cniVersion", "1.0.0")
except ValueError:
    version = "1.0.0"
if command == "VERSION":
    print(json.dumps({"cniVersion": version, "supportedVersions":
                      ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"]}))
elif command == "ADD":
    print(json.dumps({"cniVersion": version, "code": 11,
                      "msg": "injected failure: the conformance harness fails this ADD"}))
    sys.exit(1)
"""


class Verdict(enum.StrEnum):
    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"


class CheckFailed(Exception):
    """The plugins did something the spec forbids; the message says what."""


class NotApplicable(Exception):
    """The check cannot apply to this config or these plugins; the message says why."""


@dataclass(frozen=True)
class Check:
    id: str
    section: str  # where in the CNI spec (SPEC.md) the rule comes from
    title: str
    run: Callable[[Scope], str]


CHECKS: list[Check] = []


def _check(check_id: str, section: str, title: str) -> Callable[[Callable[[Scope], str]], Any]:
    def register(function: Callable[[Scope], str]) -> Callable[[Scope], str]:
        CHECKS.append(Check(check_id, section, title, function))
        return function

    return register


# --- what a check works with -----------------------------------------------------------------


@dataclass
class Suite:
    """One run: plugins, config and the node namespace every plugin runs in."""

    plugin_dirs: list[str]
    netconf: JSONObject
    node: netns_mod.Netns
    work_dir: Path
    ifname: str = "eth0"
    timeout: float = 30.0
    extra_env: dict[str, str] = field(default_factory=dict)
    capability_args: JSONObject = field(default_factory=dict)
    # the runtime the suite acts as: its libcni's newest version, and whether it reads
    # cniVersions (libcni 1.2+, the first to know 1.1.0, does)
    max_version: str = versions.CURRENT
    reads_cni_versions: bool = True
    _versions: dict[str, Invocation] = field(default_factory=dict)
    # makes another node like `node` (a check that must see the node as no other check left it)
    new_node: Callable[[], netns_mod.Netns] | None = None

    def load(self, netconf: Mapping[str, Any]) -> Network:
        """`netconf` as this suite's runtime reads it (which version it selects)."""
        return load_network(netconf, self.max_version, self.reads_cni_versions)

    @property
    def network(self) -> Network:
        return self.load(self.netconf)

    @property
    def cni_version(self) -> str:
        return self.network.cni_version

    @property
    def helper_dir(self) -> Path:
        return self.work_dir / "bin"

    @property
    def all_dirs(self) -> list[str]:
        """The operator's plugin dirs, then the harness's own (the failing plugin)."""
        return [*self.plugin_dirs, str(self.helper_dir)]

    def chain_types(self) -> list[str]:
        return [str(plugin["type"]) for plugin in self.network.plugins]

    def ipam_types(self) -> list[str]:
        """The IPAM plugins the chain delegates to (those found in the plugin dirs)."""
        found = []
        for plugin in self.network.plugins:
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and isinstance(ipam.get("type"), str):
                try:
                    self.executable(ipam["type"])
                except CniRuntimeError:
                    continue
                found.append(ipam["type"])
        return found

    def executable(self, plugin_type: str) -> str:
        return Runtime(self.all_dirs, str(self.work_dir)).find_plugin(plugin_type)

    def version_answer(self, plugin_type: str) -> Invocation:
        """The plugin's VERSION invocation (asked once per run, with the config's version)."""
        if plugin_type not in self._versions:
            self._versions[plugin_type] = invoke(
                self.executable(plugin_type),
                "VERSION",
                config={"cniVersion": self.cni_version},
                timeout=self.timeout,
                in_netns=self.node.path,
                extra_env=self.extra_env,
            )
        return self._versions[plugin_type]

    def supported_versions(self, plugin_type: str) -> list[str]:
        output = self.version_answer(plugin_type).output
        listed = output.get("supportedVersions") if isinstance(output, dict) else None
        return [v for v in listed if isinstance(v, str)] if isinstance(listed, list) else []

    def has_version(self, minimum: str) -> bool:
        try:
            self.require_version(minimum, "")
        except NotApplicable:
            return False
        return True

    def require_version(self, minimum: str, what: str) -> None:
        """NotApplicable unless the config's version and every plugin in the chain have
        `minimum`."""
        if not versions.at_least(self.cni_version, minimum):
            raise NotApplicable(
                f"{what} needs cniVersion {minimum} or later; the config selects {self.cni_version}"
            )
        for plugin_type in dict.fromkeys([*self.chain_types(), *self.ipam_types()]):
            supported = self.supported_versions(plugin_type)
            if not any(_version_ok(v) and versions.at_least(v, minimum) for v in supported):
                raise NotApplicable(
                    f"{what} needs cniVersion {minimum}; {plugin_type}'s VERSION lists"
                    f" {', '.join(supported) or 'nothing'}"
                )


@dataclass
class Pod:
    ns: netns_mod.Netns
    container_id: str
    netconf: JSONObject
    result: JSONObject | None = None

    @property
    def path(self) -> str:
        return self.ns.path

    @property
    def cni_args(self) -> list[tuple[str, str]]:
        """What containerd puts in CNI_ARGS for a pod sandbox."""
        return [
            ("IgnoreUnknown", "1"),
            ("K8S_POD_NAMESPACE", "conformance"),
            ("K8S_POD_NAME", self.container_id),
            ("K8S_POD_INFRA_CONTAINER_ID", self.container_id),
        ]


class Scope:
    """What one check owns: a runtime with its own cache, the config with its own IPAM state
    directory, and the pods it made (deleted in `cleanup`)."""

    def __init__(self, suite: Suite, check_id: str) -> None:
        self.suite = suite
        self.dir = Path(tempfile.mkdtemp(prefix=f"{check_id}-", dir=suite.work_dir))
        self.runtime = Runtime(
            suite.all_dirs,
            str(self.dir / "cache"),
            max_version=suite.max_version,
            reads_cni_versions=suite.reads_cni_versions,
            timeout=suite.timeout,
            in_netns=suite.node.path,
            extra_env=suite.extra_env,
        )
        self.netconf = self._with_own_state(suite.netconf)
        self.pods: list[Pod] = []
        self._counter = 0
        self._own_node: netns_mod.Netns | None = None

    @property
    def ifname(self) -> str:
        return self.suite.ifname

    @property
    def node(self) -> netns_mod.Netns:
        return self._own_node or self.suite.node

    def use_own_node(self) -> netns_mod.Netns:
        """From now on the check's plugins run in a node of its own, made like the suite's and
        deleted in `cleanup`: nothing another check did is on it. (The suite's node when the
        suite cannot make another.)"""
        if self._own_node is None and self.suite.new_node is not None:
            self._own_node = self.suite.new_node()
            self.runtime.in_netns = self._own_node.path
        return self.node

    def _with_own_state(self, netconf: Mapping[str, Any]) -> JSONObject:
        """The config with every IPAM `dataDir` (host-local's lease store) in this scope."""
        conf = copy.deepcopy(dict(netconf))
        for plugin in _plugins_of(conf):
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and (
                "dataDir" in ipam or "host-local" in str(ipam.get("type"))
            ):
                ipam["dataDir"] = str(self.dir / "ipam")
        return conf

    def pod(self, netconf: JSONObject | None = None) -> Pod:
        """A new pod namespace and container ID (nothing added yet); cleaned up at the end."""
        ns = netns_mod.create(POD_NETNS_PREFIX)
        self._counter += 1
        pod = Pod(
            ns, f"conformance-{ns.name.rsplit('-', 1)[-1]}-{self._counter}", netconf or self.netconf
        )
        self.pods.append(pod)
        return pod

    def add(self, pod: Pod) -> JSONObject:
        pod.result = self.runtime.add(
            pod.netconf, pod.container_id, pod.path, self.ifname, **self.attachment_args(pod)
        )
        return pod.result

    def added_pod(self, netconf: JSONObject | None = None) -> Pod:
        pod = self.pod(netconf)
        self.add(pod)
        return pod

    def check(self, pod: Pod) -> None:
        self.runtime.check(
            pod.netconf, pod.container_id, pod.path, self.ifname, **self.attachment_args(pod)
        )

    def delete(self, pod: Pod, netns: str | None = None) -> None:
        path = pod.path if netns is None else netns
        self.runtime.delete(
            pod.netconf, pod.container_id, path, self.ifname, **self.attachment_args(pod)
        )

    def attachment_args(self, pod: Pod) -> dict[str, Any]:
        """CNI_ARGS and capability args: the same for ADD, CHECK and DEL of one attachment."""
        return {"cni_args": pod.cni_args, "capability_args": self.suite.capability_args}

    def raw(
        self,
        plugin_type: str,
        command: str,
        config: Mapping[str, Any] | bytes,
        *,
        pod: Pod | None = None,
        env: Mapping[str, str | None] | None = None,
    ) -> Invocation:
        """One exec of one plugin inside the node, with the attachment of `pod` (if any) and
        `env` overriding CNI_CONTAINERID/CNI_NETNS/CNI_IFNAME (None leaves one out)."""
        params: dict[str, str | None] = {
            "CNI_CONTAINERID": pod.container_id if pod else None,
            "CNI_NETNS": pod.path if pod else None,
            "CNI_IFNAME": self.ifname if pod else None,
            **(env or {}),
        }
        invocation = invoke(
            self.suite.executable(plugin_type),
            command,
            container_id=params["CNI_CONTAINERID"],
            netns=params["CNI_NETNS"],
            ifname=params["CNI_IFNAME"],
            cni_path=self.runtime.cni_path,
            config=config,
            timeout=self.suite.timeout,
            in_netns=self.node.path,
            extra_env=self.suite.extra_env,
        )
        self.runtime.invocations.append(invocation)
        return invocation

    def head_request(self, **overrides: Any) -> JSONObject:
        """The ADD request of the chain's first plugin (as the runtime would send it)."""
        network = self.suite.load(self.netconf)
        return {**plugin_request(network, network.plugins[0]), **overrides}

    def gc(self, netconf: JSONObject, valid: Sequence[Pod]) -> list[Invocation]:
        """GC every plugin of the chain with `valid` as the valid attachments -- the plugin's
        own GC only. (Runtime.gc, like libcni, first DELs every cached attachment not listed,
        which would hide a plugin whose GC does nothing.)"""
        network = self.suite.load(netconf)
        listed = [{"containerID": p.container_id, "ifname": self.ifname} for p in valid]
        invocations = []
        for plugin in network.plugins:
            request = {
                **plugin,
                "name": network.name,
                "cniVersion": network.cni_version,
                VALID_ATTACHMENTS_KEY: listed,
                LEGACY_ATTACHMENTS_KEY: listed,
            }
            invocations.append(self.raw(str(plugin["type"]), "GC", request))
        return invocations

    def tiny(self, capacity: int) -> JSONObject:
        """The config with an IPv4 range of exactly `capacity` addresses (NotApplicable when
        its IPAM has no host-local style range to shrink)."""
        conf = copy.deepcopy(self.netconf)
        for plugin in _plugins_of(conf):
            ipam = plugin.get("ipam")
            if isinstance(ipam, dict) and _shrink_range(ipam, capacity):
                return conf
        raise NotApplicable(
            "cannot observe leases: no IPAM section with an IPv4 `ranges` or `subnet` to shrink"
            " to a few addresses"
        )

    def chained_with_failure(self, netconf: JSONObject) -> JSONObject:
        """`netconf` as a conflist with the harness's failing plugin appended."""
        conf = copy.deepcopy(netconf)
        if "plugins" not in conf:
            top: JSONObject = {
                k: conf.pop(k) for k in ("cniVersion", "cniVersions", "name") if k in conf
            }
            conf = {**top, "plugins": [conf]}
        conf["plugins"].append({"type": FAIL_PLUGIN})
        return conf

    def cleanup(self) -> list[str]:
        """DEL every pod (errors collected, not raised), remove the namespaces and state."""
        errors = []
        for pod in reversed(self.pods):
            try:
                self.delete(pod, pod.path if pod.ns.exists() else "")
            except (PluginError, CniRuntimeError, OSError) as err:
                errors.append(f"cleanup DEL of {pod.container_id}: {err}")
            try:
                pod.ns.delete()
            except netns_mod.NetnsError as err:
                errors.append(str(err))
        if self._own_node is not None:
            try:
                self._own_node.delete()
            except netns_mod.NetnsError as err:
                errors.append(str(err))
        shutil.rmtree(self.dir, ignore_errors=True)
        return errors


def _plugins_of(conf: JSONObject) -> list[JSONObject]:
    plugins = conf.get("plugins", [conf])
    return [p for p in plugins if isinstance(p, dict)]


def _shrink_range(ipam: JSONObject, capacity: int) -> bool:
    ranges = ipam.get("ranges")
    if isinstance(ranges, list):
        for range_set in ranges:
            for entry in range_set if isinstance(range_set, list) else ():
                if isinstance(entry, dict) and _is_ipv4_subnet(entry.get("subnet")):
                    ipam["ranges"] = [[_tiny_range(entry, capacity)]]
                    return True
        return False
    if _is_ipv4_subnet(ipam.get("subnet")):
        ipam.update(_tiny_range(ipam, capacity))
        return True
    return False


def _is_ipv4_subnet(value: Any) -> bool:
    try:
        return isinstance(value, str) and ipaddress.ip_network(value, strict=False).version == 4
    except ValueError:
        return False


def _tiny_range(entry: Mapping[str, Any], capacity: int) -> JSONObject:
    subnet = ipaddress.ip_network(str(entry["subnet"]), strict=False)
    gateway = entry.get("gateway") or str(subnet.network_address + 1)
    hosts = [h for h in _first_hosts(subnet, capacity + 2) if str(h) != gateway][:capacity]
    return {
        "subnet": str(subnet),
        "gateway": gateway,
        "rangeStart": str(hosts[0]),
        "rangeEnd": str(hosts[-1]),
    }


def _first_hosts(subnet: ipaddress.IPv4Network | ipaddress.IPv6Network, n: int) -> Iterator[Any]:
    for index, host in enumerate(subnet.hosts()):
        if index >= n:
            return
        yield host


def _version_ok(text: str) -> bool:
    try:
        versions.parse(text)
    except ValueError:
        return False
    return True


# --- the kernel's view -----------------------------------------------------------------------


def _links(ns: netns_mod.Netns) -> dict[str, JSONObject]:
    return {link["ifname"]: link for link in ns.ip_json("-d", "link", "show")}


def _addresses(ns: netns_mod.Netns) -> dict[str, set[str]]:
    """interface name -> {"10.0.0.2/24", ...} as the kernel shows them."""
    found: dict[str, set[str]] = {}
    for link in ns.ip_json("addr", "show"):
        found[link["ifname"]] = {
            f"{ipaddress.ip_address(a['local'])}/{a['prefixlen']}"
            for a in link.get("addr_info", [])
        }
    return found


def _routes(ns: netns_mod.Netns) -> set[str]:
    """Every route destination in the namespace as a network ("0.0.0.0/0", "10.1.0.0/16")."""
    found = set()
    for family, default in (("-4", "0.0.0.0/0"), ("-6", "::/0")):
        for route in ns.ip_json(family, "route", "show", "table", "all"):
            dst = route.get("dst", "")
            found.add(default if dst == "default" else str(ipaddress.ip_network(dst, strict=False)))
    return found


def _new_veths(node: netns_mod.Netns, before: Mapping[str, JSONObject]) -> list[str]:
    return sorted(
        name
        for name, link in _links(node).items()
        if name not in before and link.get("linkinfo", {}).get("info_kind") == "veth"
    )


def _sandbox_links(pod: Pod) -> list[str]:
    return [name for name in pod.ns.link_names() if name != "lo"]


def _pod_addresses(result: Mapping[str, Any], version: int | None = None) -> list[str]:
    """The pod's addresses in a result: those on an interface in a sandbox (or on no named
    interface), without the prefix length."""
    interfaces = result.get("interfaces") or []
    found = []
    for ip in result.get("ips") or []:
        index = ip.get("interface")
        on_host = isinstance(index, int) and 0 <= index < len(interfaces)
        if on_host and not interfaces[index].get("sandbox"):
            continue
        address = str(ip.get("address", "")).split("/")[0]
        if address and (version is None or ipaddress.ip_address(address).version == version):
            found.append(address)
    return found


# --- checks: VERSION and version negotiation ----------------------------------------------------


@_check(
    "version.output", "SPEC §2 VERSION, §5 VERSION Success", "VERSION prints supported versions"
)
def version_output(scope: Scope) -> str:
    seen = []
    for plugin_type in dict.fromkeys([*scope.suite.chain_types(), *scope.suite.ipam_types()]):
        invocation = scope.suite.version_answer(plugin_type)
        output = invocation.output
        if not invocation.ok or invocation.problems:
            problems = "; ".join(map(str, invocation.problems))
            raise CheckFailed(f"{plugin_type} VERSION {_status(invocation)}: {problems}")
        if not isinstance(output, dict) or not isinstance(output.get("cniVersion"), str):
            raise CheckFailed(f"{plugin_type} VERSION has no cniVersion string: {output!r}")
        supported = output.get("supportedVersions")
        if not isinstance(supported, list) or not supported:
            raise CheckFailed(f"{plugin_type} VERSION has no supportedVersions list: {output!r}")
        bad = [v for v in supported if not isinstance(v, str) or not _version_ok(v)]
        if bad:
            raise CheckFailed(f"{plugin_type} lists versions that are not X.Y.Z: {bad!r}")
        oldest, newest = min(supported, key=versions.parse), max(supported, key=versions.parse)
        seen.append(f"{plugin_type} {oldest}..{newest}")
    return "; ".join(seen)


@_check(
    "version.negotiation",
    "SPEC §1 cniVersions; libcni ValidateNetworkList",
    "every plugin supports the version the runtime selects",
)
def version_negotiation(scope: Scope) -> str:
    conf = scope.suite.netconf
    offered = list(dict.fromkeys([conf.get("cniVersion"), *conf.get("cniVersions", [])]))
    selected = scope.suite.cni_version
    missing = [
        t for t in scope.suite.chain_types() if selected not in scope.suite.supported_versions(t)
    ]
    if missing:
        raise CheckFailed(
            f"the runtime selects {selected} (config offers {offered}); not supported by"
            f" {', '.join(missing)}"
        )
    return f"config offers {', '.join(str(v) for v in offered if v)}; selected {selected}"


@_check(
    "version.incompatible",
    "SPEC §5 Error (code 1)",
    "ADD with an unsupported cniVersion fails with code 1",
)
def version_incompatible(scope: Scope) -> str:
    pod = scope.pod()
    head = scope.suite.chain_types()[0]
    invocation = scope.raw(head, "ADD", scope.head_request(cniVersion="99.0.0"), pod=pod)
    code = _expect_error(invocation, f"{head} ADD with cniVersion 99.0.0")
    if code != 1:
        raise CheckFailed(f"{head} refused cniVersion 99.0.0 with code {code}, not 1")
    return f"{head}: code 1"


@_check(
    "version.verb-gating",
    "SPEC §2 CHECK (0.4.0), GC and STATUS (1.1.0)",
    "verbs newer than the config's cniVersion are refused",
)
def version_verb_gating(scope: Scope) -> str:
    head = scope.suite.chain_types()[0]
    supported = [v for v in scope.suite.supported_versions(head) if _version_ok(v)]
    seen = []
    for command, since in (("CHECK", "0.4.0"), ("GC", "1.1.0"), ("STATUS", "1.1.0")):
        older = [v for v in supported if not versions.at_least(v, since)]
        if not older:
            continue
        old = max(older, key=versions.parse)
        pod = scope.pod() if command == "CHECK" else None
        prev: dict[str, Any] = {}
        if pod is not None:
            prev = {"prevResult": scope.add(pod)}
        request = scope.head_request(cniVersion=old, **prev)
        if command == "GC":
            request[VALID_ATTACHMENTS_KEY] = request[LEGACY_ATTACHMENTS_KEY] = []
        invocation = scope.raw(head, command, request, pod=pod)
        if invocation.ok and not invocation.problems:
            raise CheckFailed(
                f"{head} accepted {command} with cniVersion {old} ({command} is {since})"
            )
        code = _expect_error(invocation, f"{head} {command} with cniVersion {old}")
        seen.append(f"{command}@{old} refused (code {code})")
    if not seen:
        raise NotApplicable(f"{head} supports no version older than the verbs it has")
    return "; ".join(seen)


# --- checks: environment and errors ------------------------------------------------------------

_ENV_CASES: list[tuple[str, str, str, dict[str, str | None], frozenset[int]]] = [
    # id, title, command, env overrides, codes the spec allows (empty: any error)
    ("env.no-command", "CNI_COMMAND empty", "", {}, frozenset({4})),
    ("env.unknown-command", "CNI_COMMAND=FROB", "FROB", {}, frozenset({4})),
    (
        "env.no-containerid",
        "ADD without CNI_CONTAINERID",
        "ADD",
        {"CNI_CONTAINERID": None},
        frozenset({3, 4}),
    ),
    (
        "env.bad-containerid",
        "ADD with CNI_CONTAINERID '-x/y'",
        "ADD",
        {"CNI_CONTAINERID": "-x/y"},
        frozenset({3, 4}),
    ),
    ("env.no-ifname", "ADD without CNI_IFNAME", "ADD", {"CNI_IFNAME": None}, frozenset({4})),
    ("env.no-netns", "ADD without CNI_NETNS", "ADD", {"CNI_NETNS": None}, frozenset({3, 4})),
    (
        "env.missing-netns",
        "ADD with a CNI_NETNS path that does not exist",
        "ADD",
        {"CNI_NETNS": "/run/netns/pycni-conformance-none"},
        frozenset(),
    ),
]
_BAD_IFNAMES = ("0123456789abcdef", "a/b", "eth 0", "..")


def _env_check(
    command: str, env: dict[str, str | None], codes: frozenset[int]
) -> Callable[[Scope], str]:
    def run(scope: Scope) -> str:
        pod = scope.pod()
        head = scope.suite.chain_types()[0]
        invocation = scope.raw(head, command, scope.head_request(), pod=pod, env=env)
        if not command and invocation.ok and not invocation.stdout and not _sandbox_links(pod):
            # Go's skel prints its "about" text on stderr and exits 0 when CNI_COMMAND is not
            # set (someone ran the binary by hand); nothing done, nothing on stdout: lenient.
            return "exit 0, nothing on stdout, nothing created (a usage text, as Go's skel does)"
        code = _expect_error(invocation, f"{head} {command or '(no command)'}")
        if codes and code not in codes:
            raise CheckFailed(
                f"code {code}; the spec's code for this is {'/'.join(map(str, sorted(codes)))}"
            )
        left = _sandbox_links(pod)
        if left:
            raise CheckFailed(f"code {code}, but it left {left} in the pod namespace")
        return f"code {code}: {invocation.output.get('msg', '')}"

    return run


for _id, _title, _command, _env, _codes in _ENV_CASES:
    CHECKS.append(
        Check(
            _id,
            "SPEC §2 Parameters, §5 Error",
            f"{_title} is an error",
            _env_check(_command, _env, _codes),
        )
    )


@_check("env.bad-ifname", "SPEC §2 Parameters (CNI_IFNAME)", "unusable interface names are errors")
def env_bad_ifname(scope: Scope) -> str:
    head = scope.suite.chain_types()[0]
    seen = []
    for ifname in _BAD_IFNAMES:
        pod = scope.pod()
        invocation = scope.raw(
            head, "ADD", scope.head_request(), pod=pod, env={"CNI_IFNAME": ifname}
        )
        code = _expect_error(invocation, f"{head} ADD with CNI_IFNAME {ifname!r}")
        left = _sandbox_links(pod)
        if left:
            raise CheckFailed(f"CNI_IFNAME {ifname!r}: code {code}, but it left {left} in the pod")
        seen.append(f"{ifname!r}: {code}")
    return "codes " + ", ".join(seen)


@_check("error.object", "SPEC §2 Errors, §5 Error", "errors: non-zero exit and an error object")
def error_object(scope: Scope) -> str:
    head = scope.suite.chain_types()[0]
    cases: list[tuple[str, JSONObject | bytes, dict[str, str | None]]] = [
        ("stdin that is not JSON", b"{this is not json", {}),
        ("no CNI_IFNAME", scope.head_request(), {"CNI_IFNAME": None}),
    ]
    seen = []
    for what, config, env in cases:
        pod = scope.pod()
        invocation = scope.raw(head, "ADD", config, pod=pod, env=env)
        code = _expect_error(invocation, f"{head} ADD with {what}")
        error = invocation.output
        shape = [
            key
            for key, kind in (("cniVersion", str), ("details", str))
            if key in error and not isinstance(error[key], kind)
        ]
        if shape:
            raise CheckFailed(f"{what}: error object fields of the wrong type: {shape}: {error!r}")
        seen.append(f"{what}: exit {invocation.exit_status}, code {code}")
    return "; ".join(seen)


def _expect_error(invocation: Invocation, what: str) -> int:
    """The error code of a failed invocation; CheckFailed unless it failed the spec's way:
    non-zero exit status and an error object (integer `code`, string `msg`) on stdout."""
    if invocation.timed_out:
        raise CheckFailed(f"{what}: timed out")
    output = invocation.output
    is_error = (
        isinstance(output, dict)
        and type(output.get("code")) is int
        and isinstance(output.get("msg"), str)
    )
    if invocation.exit_status == 0:
        if is_error:
            raise CheckFailed(
                f"{what}: exit status 0 with an error object: {invocation.stdout[:200]!r}"
            )
        raise CheckFailed(f"{what}: succeeded, where the spec wants an error")
    if invocation.exit_status < 0:
        raise CheckFailed(f"{what}: killed by signal {-invocation.exit_status}")
    if not is_error:
        raise CheckFailed(
            f"{what}: {_status(invocation)} without an error object on stdout:"
            f" {invocation.stdout[:200]!r}"
        )
    return int(output["code"])


def _status(invocation: Invocation) -> str:
    return f"exited with status {invocation.exit_status}"


# --- checks: ADD ------------------------------------------------------------------------------


@_check("add.result-shape", "SPEC §5 ADD Success", "the ADD result has the shape of its version")
def add_result_shape(scope: Scope) -> str:
    pod = scope.pod()
    result = scope.add(pod)
    version = scope.suite.cni_version
    for invocation in scope.runtime.invocations:
        if invocation.command == "ADD" and invocation.plugin != FAIL_PLUGIN:
            problems = result_problems(invocation.output, version)
            if problems:
                raise CheckFailed(f"{invocation.plugin}'s ADD result: {'; '.join(problems)}")
    ips = ", ".join(str(ip.get("address")) for ip in result.get("ips", []))
    return (
        f"cniVersion {version}, {len(result.get('interfaces', []))} interfaces, ips {ips or 'none'}"
    )


def result_problems(result: Any, version: str) -> list[str]:
    """What is wrong with an ADD result of `version` (empty: nothing)."""
    if not isinstance(result, dict):
        return [f"not a JSON object: {result!r}"]
    problems = []
    if result.get("cniVersion") != version:
        problems.append(f"cniVersion is {result.get('cniVersion')!r}, the request's is {version}")
    interfaces = result.get("interfaces", [])
    if not isinstance(interfaces, list):
        return [*problems, "interfaces is not a list"]
    for n, interface in enumerate(interfaces):
        if not isinstance(interface, dict) or not isinstance(interface.get("name"), str):
            problems.append(f"interfaces[{n}] has no name")
        elif "mac" in interface and not _is_mac(interface["mac"]):
            problems.append(f"interfaces[{n}].mac {interface['mac']!r} is not a MAC address")
    with_version = not versions.at_least(version, "1.0.0")
    for n, ip in enumerate(result.get("ips", [])):
        where = f"ips[{n}]"
        if not isinstance(ip, dict):
            problems.append(f"{where} is not an object")
            continue
        try:
            address = ipaddress.ip_interface(str(ip.get("address")))
        except (TypeError, ValueError):
            problems.append(f"{where}.address {ip.get('address')!r} is not an address/prefix")
            continue
        if "/" not in str(ip.get("address")):
            problems.append(f"{where}.address {ip['address']!r} has no prefix length")
        if "gateway" in ip and not _is_ip(ip["gateway"]):
            problems.append(f"{where}.gateway {ip['gateway']!r} is not an address")
        index = ip.get("interface")
        if index is not None and (type(index) is not int or not 0 <= index < len(interfaces)):
            problems.append(f"{where}.interface {index!r} is not an index into interfaces")
        if with_version and ip.get("version") != str(address.version):
            problems.append(
                f"{where}.version is {ip.get('version')!r}; {version} needs '{address.version}'"
            )
        if not with_version and "version" in ip:
            problems.append(f"{where} has a version field, removed in 1.0.0")
    for n, route in enumerate(result.get("routes", [])):
        if not isinstance(route, dict) or not _is_network(route.get("dst")):
            problems.append(f"routes[{n}].dst is not a network: {route!r}")
        elif "gw" in route and not _is_ip(route["gw"]):
            problems.append(f"routes[{n}].gw {route['gw']!r} is not an address")
    if "dns" in result and not isinstance(result["dns"], dict):
        problems.append("dns is not an object")
    return problems


def _is_ip(value: Any) -> bool:
    try:
        ipaddress.ip_address(value)
    except (TypeError, ValueError):
        return False
    return True


def _is_network(value: Any) -> bool:
    try:
        ipaddress.ip_network(value, strict=False)
    except (TypeError, ValueError):
        return False
    return True


def _is_mac(value: Any) -> bool:
    parts = value.split(":") if isinstance(value, str) else []
    return len(parts) == 6 and all(
        len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts
    )


@_check(
    "add.result-matches-netns",
    "SPEC §2 ADD, §5 ADD Success",
    "the interfaces, addresses and routes the result claims exist",
)
def add_result_matches_netns(scope: Scope) -> str:
    pod = scope.pod()
    result = scope.add(pod)
    pod_links, node_links = _links(pod.ns), _links(scope.node)
    pod_addrs, node_addrs = _addresses(pod.ns), _addresses(scope.node)
    if scope.ifname not in pod_links:
        raise CheckFailed(f"no interface {scope.ifname} in the pod; it has {sorted(pod_links)}")
    interfaces = result.get("interfaces") or []
    for interface in interfaces:
        in_pod = bool(interface.get("sandbox"))
        links = pod_links if in_pod else node_links
        where = "pod" if in_pod else "node"
        link = links.get(interface["name"])
        if link is None:
            raise CheckFailed(
                f"result lists interface {interface['name']} in the {where}; it is not there"
            )
        mac = str(interface.get("mac", "")).lower()
        if mac and link.get("address", "").lower() != mac:
            raise CheckFailed(
                f"{where} interface {interface['name']} has MAC {link.get('address')},"
                f" result says {mac}"
            )
    for ip in result.get("ips") or []:
        address = str(ipaddress.ip_interface(ip["address"]))
        index = ip.get("interface")
        if isinstance(index, int) and index < len(interfaces):
            name = interfaces[index]["name"]
            in_pod = bool(interfaces[index].get("sandbox"))
            found = (pod_addrs if in_pod else node_addrs).get(name, set())
            if address not in found:
                raise CheckFailed(
                    f"result puts {address} on {name}; the kernel shows"
                    f" {sorted(found) or 'no address'} there"
                )
        elif not any(address in addrs for addrs in pod_addrs.values()):
            raise CheckFailed(f"result lists {address}; no interface in the pod has it")
    routes = _routes(pod.ns)
    for route in result.get("routes") or []:
        dst = str(ipaddress.ip_network(route["dst"], strict=False))
        if dst not in routes:
            raise CheckFailed(
                f"result lists a route to {dst}; the pod has routes to {sorted(routes)}"
            )
    return (
        f"{len(interfaces)} interfaces, {len(result.get('ips') or [])} addresses,"
        f" {len(result.get('routes') or [])} routes found"
    )


@_check("add.duplicate", "SPEC §2 ADD", "a second ADD of the same attachment is an error")
def add_duplicate(scope: Scope) -> str:
    pod = scope.added_pod()
    try:
        scope.add(pod)
    except PluginError as err:
        return f"refused with code {err.code}: {err.msg}"
    raise CheckFailed(f"a second ADD of ({pod.container_id}, {scope.ifname}) succeeded")


@_check(
    "add.parallel",
    "SPEC §3 Lifecycle & Ordering",
    f"{PARALLEL_PODS} parallel ADDs succeed with distinct addresses",
)
def add_parallel(scope: Scope) -> str:
    _require_dynamic_addresses(scope)
    pods = [scope.pod() for _ in range(PARALLEL_PODS)]
    with concurrent.futures.ThreadPoolExecutor(PARALLEL_PODS) as pool:
        results = list(pool.map(scope.add, pods))
    owners: dict[str, str] = {}
    for pod, result in zip(pods, results, strict=True):
        for address in _pod_addresses(result):
            if address in owners:
                raise CheckFailed(
                    f"{address} was given to {owners[address]} and {pod.container_id}"
                )
            owners[address] = pod.container_id
    return f"{len(owners)} distinct addresses"


def _require_dynamic_addresses(scope: Scope) -> None:
    ipam = _ipam_of(scope.netconf)
    if isinstance(ipam, dict) and ipam.get("type") == "static":
        raise NotApplicable("static IPAM gives every pod the addresses written in the config")


# --- checks: CHECK ----------------------------------------------------------------------------


def _require_check(scope: Scope) -> None:
    scope.suite.require_version("0.4.0", "CHECK")
    if scope.suite.network.disable_check:
        raise NotApplicable("the config sets disableCheck")


@_check("check.after-add", "SPEC §2 CHECK", "CHECK right after ADD passes")
def check_after_add(scope: Scope) -> str:
    _require_check(scope)
    pod = scope.added_pod()
    try:
        scope.check(pod)
    except PluginError as err:  # maybe a chained plugin lost what this one checks
        drops = chain_drops([i for i in scope.runtime.invocations if i.command == "ADD"])
        if not drops:
            raise
        raise CheckFailed(
            f"{err}; the prevResult it checked was not whole: {'; '.join(drops)}"
            " (chain.prev-result)"
        ) from None
    return "passed"


@_check(
    "check.removed-address", "SPEC §2 CHECK", "CHECK fails when an address of the result is gone"
)
def check_removed_address(scope: Scope) -> str:
    _require_check(scope)
    pod = scope.added_pod()
    addresses = _addresses(pod.ns).get(scope.ifname, set())
    claimed = [
        str(ipaddress.ip_interface(ip["address"])) for ip in (pod.result or {}).get("ips", [])
    ]
    target = next((a for a in claimed if a in addresses), None)
    if target is None:
        raise NotApplicable(f"the result puts no address on {scope.ifname}")
    pod.ns.ip("addr", "del", target, "dev", scope.ifname)
    try:
        scope.check(pod)
    except PluginError as err:
        return f"{target} removed: CHECK failed with code {err.code}"
    raise CheckFailed(f"CHECK passed after {target} was removed from {scope.ifname}")


@_check(
    "config.older-runtimes",
    "libcni < 1.2 (containerd 1.6/1.7, CRI-O < 1.31)",
    "the config works for a runtime at 1.0.0 that ignores cniVersions",
)
def config_older_runtimes(scope: Scope) -> str:
    """ADD, CHECK, DEL as libcni 1.1 makes them: it sends the config's cniVersion, never reads
    cniVersions, and fails an ADD whose result is newer than 1.0.0."""
    legacy = versions.LEGACY_LIBCNI_MAX
    runtime = Runtime(
        scope.suite.all_dirs,
        str(scope.dir / "legacy-cache"),
        max_version=legacy,
        reads_cni_versions=False,
        timeout=scope.suite.timeout,
        in_netns=scope.node.path,
        extra_env=scope.suite.extra_env,
    )
    network = runtime.load(scope.netconf)
    pod = scope.pod()
    args = scope.attachment_args(pod)  # containerd's CNI_ARGS, the run's capability args
    try:
        runtime.add(pod.netconf, pod.container_id, pod.path, scope.ifname, **args)
    except (ResultVersionError, PluginError) as err:
        fix = (
            f"; set cniVersion {legacy} and list {network.cni_version} in cniVersions"
            if not versions.at_least(legacy, network.cni_version)
            else ""
        )
        raise CheckFailed(
            f"a runtime on libcni < 1.2 ({versions.LEGACY_RUNTIMES}) sends cniVersion"
            f" {network.cni_version} (it ignores cniVersions): {err}{fix}"
        ) from None
    verbs = ["ADD"]
    if versions.at_least(network.cni_version, versions.VERB_SINCE["CHECK"]) and not (
        network.disable_check
    ):
        runtime.check(pod.netconf, pod.container_id, pod.path, scope.ifname, **args)
        verbs.append("CHECK")
    runtime.delete(pod.netconf, pod.container_id, pod.path, scope.ifname, **args)
    verbs.append("DEL")
    if scope.ifname in pod.ns.link_names():
        raise CheckFailed(f"{scope.ifname} is still in the pod after DEL")
    return f"cniVersion {network.cni_version} at a 1.0.0 runtime: {', '.join(verbs)} ok"


# --- checks: DEL ------------------------------------------------------------------------------


@_check("del.twice", "SPEC §2 DEL", "DEL twice succeeds both times")
def del_twice(scope: Scope) -> str:
    pod = scope.added_pod()
    scope.delete(pod)
    if scope.ifname in pod.ns.link_names():
        raise CheckFailed(f"{scope.ifname} is still in the pod after DEL")
    _second_del(scope, pod, pod.path)
    return "both succeeded"


def _second_del(scope: Scope, pod: Pod, netns: str) -> None:
    try:
        scope.delete(pod, netns)
    except PluginError as err:
        raise CheckFailed(f"the second DEL failed: {err}") from None


@_check("del.netns-gone", "SPEC §2 DEL", "DEL succeeds after the pod namespace is gone")
def del_netns_gone(scope: Scope) -> str:
    pod = scope.added_pod()
    path = pod.path
    pod.ns.delete()
    try:
        scope.delete(pod, path)
    except PluginError as err:
        raise CheckFailed(f"DEL with the namespace gone failed: {err}") from None
    return "succeeded"


@_check(
    "del.empty-netns", "SPEC §2 DEL (CNI_NETNS optional)", "DEL with an empty CNI_NETNS succeeds"
)
def del_empty_netns(scope: Scope) -> str:
    pod = scope.added_pod()
    try:
        scope.delete(pod, "")
    except PluginError as err:
        raise CheckFailed(f"DEL with CNI_NETNS='' failed: {err}") from None
    return "succeeded"


@_check("del.no-prev-result", "SPEC §3 Deleting an attachment", "DEL without prevResult succeeds")
def del_no_prev_result(scope: Scope) -> str:
    pod = scope.added_pod()
    network = load_network(pod.netconf)
    scope.runtime.cache_path(network.name, pod.container_id, scope.ifname).unlink()
    try:
        scope.delete(pod)
    except PluginError as err:
        raise CheckFailed(f"DEL without prevResult failed: {err}") from None
    if scope.ifname in pod.ns.link_names():
        raise CheckFailed(f"DEL without prevResult succeeded but left {scope.ifname} in the pod")
    return "succeeded, interface removed"


@_check("del.releases", "SPEC §2 DEL, §3 Lifecycle", "DEL releases the address and the links")
def del_releases(scope: Scope) -> str:
    tiny = scope.tiny(1)
    before = _links(scope.node)
    first = scope.added_pod(tiny)
    _expect_full(scope, tiny, "one")
    scope.delete(first)
    leftovers = _new_veths(scope.node, before)
    if leftovers:
        raise CheckFailed(f"DEL left host-side veths in the node: {leftovers}")
    try:
        scope.added_pod(tiny)
    except PluginError as err:
        raise CheckFailed(f"DEL did not release the address: the next ADD fails: {err}") from None
    return "a range of one address: ADD, full, DEL, ADD again succeeds"


def _expect_full(scope: Scope, netconf: JSONObject, size: str) -> None:
    """NotApplicable unless one more ADD fails: the lease observation needs a full range."""
    pod = scope.pod(netconf)
    try:
        scope.add(pod)
    except PluginError:
        scope.delete(pod)  # as a runtime does after a failed ADD
        return
    raise NotApplicable(
        f"cannot observe leases: a range of {size} address(es) took one more ADD"
        f" ({json.dumps(_ipam_of(netconf))})"
    )


def _ipam_of(netconf: JSONObject) -> Any:
    return next((p["ipam"] for p in _plugins_of(netconf) if isinstance(p.get("ipam"), dict)), None)


@_check(
    "chain.failed-add-cleanup",
    "SPEC §3 Adding an attachment, Lifecycle",
    "after a chained plugin fails ADD, the runtime's DEL leaves nothing",
)
def chain_failed_add_cleanup(scope: Scope) -> str:
    tiny = scope.tiny(1)
    chained = scope.chained_with_failure(tiny)
    before = _links(scope.node)
    pod = scope.pod(chained)
    try:
        scope.add(pod)
    except PluginError as err:
        if err.plugin != FAIL_PLUGIN:
            raise CheckFailed(f"ADD failed before the injected failure: {err}") from None
    else:
        raise CheckFailed(f"ADD succeeded although {FAIL_PLUGIN} failed")
    scope.delete(pod)
    left = _sandbox_links(pod)
    if left:
        raise CheckFailed(f"after DEL the pod still has {left}")
    leftovers = _new_veths(scope.node, before)
    if leftovers:
        raise CheckFailed(f"after DEL the node still has veths {leftovers}")
    try:
        scope.added_pod(tiny)
    except PluginError as err:
        raise CheckFailed(
            f"the address is still held after DEL: the next ADD fails: {err}"
        ) from None
    return "pod and node clean, address free again"


# --- checks: what DEL leaves on the node, what a chain passes on ------------------------------

_DIFFERENCES_SHOWN = 12  # in a failure; the rest are counted


@dataclass(frozen=True)
class _Step:
    """The node right after one exec of one pod's ADD or DEL (or at the start of a cycle)."""

    command: str  # "ADD", "DEL"; "" for the start
    plugin: str
    pod: int
    node: nodestate.Snapshot

    def __str__(self) -> str:
        return f"{self.command} of pod {self.pod} ({self.plugin})"


@_check(
    "del.node-as-found",
    "SPEC §2 DEL (release all resources), §3 Lifecycle",
    "two ADD/DEL cycles leave the node the same: DEL undoes what its ADD did",
)
def del_node_as_found(scope: Scope) -> str:
    scope.use_own_node()  # no other check's pods, nor what they left, on it
    start = _node_state(scope)
    first_pod, first = _add_del_cycle(scope, 1, start)
    second_pod, second = _add_del_cycle(scope, 2, first[-1].node)
    after_first, after_second = first[-1].node, second[-1].node
    problems = [
        _describe_leftover(change, second)
        for change in nodestate.compare(after_first, after_second)
        if not _cursor_moved(change, second_pod)
    ]
    # the same per-pod leftover every time (static IPAM) looks like the network's: that it
    # names pod 1 gives it away
    problems += [
        f"{_describe_leftover(change, first)} (it names pod 1's {named})"
        for change in nodestate.compare(start, after_first)
        if (named := _names_pod(change, first_pod))
    ]
    if problems:
        shown = "; ".join(problems[:_DIFFERENCES_SHOWN])
        more = len(problems) - _DIFFERENCES_SHOWN
        raise CheckFailed(
            f"DEL did not leave the node as ADD found it: {shown}"
            + (f"; and {more} more" if more > 0 else "")
        )
    detail = f"after pod 2's ADD and DEL as after pod 1's: {after_second.summary()}"
    if after_second.unavailable:
        detail += f"; not compared: {'; '.join(after_second.unavailable)}"
    return detail


def _node_state(scope: Scope) -> nodestate.Snapshot:
    """The node now, with the files of every IPAM dataDir of the scope's config."""
    data_dirs = []
    for plugin in _plugins_of(scope.netconf):
        ipam = plugin.get("ipam")
        if isinstance(ipam, dict) and isinstance(ipam.get("dataDir"), str):
            data_dirs.append(Path(ipam["dataDir"]))
    return nodestate.take(scope.node, list(dict.fromkeys(data_dirs)))


def _add_del_cycle(scope: Scope, n: int, start: nodestate.Snapshot) -> tuple[Pod, list[_Step]]:
    """ADD and DEL one new pod, with the node looked at after every plugin's exec."""
    pod = scope.pod()
    steps = [_Step("", "", n, start)]

    def look(invocation: Invocation) -> None:
        steps.append(_Step(invocation.command, invocation.plugin, n, _node_state(scope)))

    scope.runtime.on_invocation = look
    try:
        scope.add(pod)
        scope.delete(pod)
    finally:
        scope.runtime.on_invocation = None
    return pod, steps


def _cursor_moved(change: nodestate.Change, pod: Pod) -> bool:
    """A file rewritten with content that is not the pod's: an allocator's cursor (host-local's
    last_reserved_ip), a seal or timestamp -- state kept for the network that changes by
    design. A file that names the pod's container ID is the pod's record, not a cursor."""
    return (
        change.item.kind == "file"
        and change.before is not None
        and change.after is not None
        and nodestate.mentions(change.after, [pod.container_id]) is None
    )


def _names_pod(change: nodestate.Change, pod: Pod) -> str | None:
    """Which of the pod's identities (its container ID, addresses, MACs) a new or changed item
    names; file contents count only when they name the container ID."""
    if change.after is None:
        return None
    result = pod.result or {}
    macs = [
        str(i["mac"]) for i in result.get("interfaces") or [] if i.get("sandbox") and i.get("mac")
    ]
    tokens = [pod.container_id, *_pod_addresses(result), *macs]
    if change.item.kind == "file":
        return nodestate.mentions(change.item.key, tokens) or nodestate.mentions(
            change.after, [pod.container_id]
        )
    return nodestate.mentions(f"{change.item.key} {change.after}", tokens)


def _describe_leftover(change: nodestate.Change, steps: Sequence[_Step]) -> str:
    """'<item>: added by ADD of pod 2 (bridge), not removed by its DEL' and the like: which
    exec made the item what it is at the end of the cycle."""
    item, pod = change.item, steps[0].pod
    step = _step_that_made(change, steps)
    by = str(step) if step else f"pod {pod}'s ADD or DEL"
    if change.added:
        what = f"{item}{_value(item, change.after)}: added by {by}"
        if step is None or step.command == "ADD":
            what += ", not removed by its DEL"
    elif change.removed:
        what = f"{item}: there before pod {pod}'s ADD, removed by {by}"
    else:
        what = f"{item}: {_what_changed(change.before or '', change.after or '')} by {by}"
        if step is None or step.command == "ADD":
            what += ", not put back by its DEL"
    if change.with_it:
        what += f" (with its {nodestate.with_it_summary(change.with_it)})"
    return what


def _step_that_made(change: nodestate.Change, steps: Sequence[_Step]) -> _Step | None:
    """The last exec after which the item took the value it ends the cycle with."""
    found = None
    previous = steps[0].node.items.get(change.item)
    for step in steps[1:]:
        value = step.node.items.get(change.item)
        if value != previous and value == change.after:
            found = step
        previous = value
    return found


def _what_changed(before: str, after: str) -> str:
    """'mtu 1500 -> mtu 1450' for values of several parts, "'0' -> '1'" for one."""
    old, new = before.split(", "), after.split(", ")
    if len(old) > 1 or len(new) > 1:
        gone = ", ".join(part for part in old if part not in new) or "nothing"
        came = ", ".join(part for part in new if part not in old) or "nothing"
        return f"{gone[:120]} -> {came[:120]}"
    return f"{before[:120]!r} -> {after[:120]!r}"


def _value(item: nodestate.Item, value: str | None) -> str:
    if not value:
        return ""
    if item.kind == "link":  # kind, master/link: what a person recognises it by
        return f" ({', '.join(part for part in value.split(', ')[:3] if part)})"
    if item.kind == "file":
        text = " ".join(value.split())
        return f" ({text[:60]!r})"
    return f" ({value[:80]})"


@_check(
    "chain.prev-result",
    "SPEC §3 Adding an attachment (prevResult), Checking, Deleting",
    "chained plugins pass on the prevResult they get; CHECK and DEL get the cached result",
)
def chain_prev_result(scope: Scope) -> str:
    pod = scope.added_pod()
    adds = [i for i in scope.runtime.invocations if i.command == "ADD"]
    problems = chain_drops(adds)
    problems += _wrongly_handed_adds(adds)
    if problems:
        raise CheckFailed("; ".join(problems))
    network = scope.suite.network
    handed: list[Invocation] = []
    note = ""
    if versions.at_least(network.cni_version, "0.4.0") and not network.disable_check:
        begun = len(scope.runtime.invocations)
        try:
            scope.check(pod)
        except PluginError as err:  # CHECK's own verdict is check.after-add's business
            note = f"; {err.plugin}'s CHECK failed, so the plugins after it got no CHECK"
        handed += scope.runtime.invocations[begun:]
    begun = len(scope.runtime.invocations)
    scope.delete(pod)
    handed += scope.runtime.invocations[begun:]
    with_prev_on_del = versions.at_least(network.cni_version, "0.4.0")
    for invocation in handed:
        wanted = pod.result if invocation.command == "CHECK" or with_prev_on_del else None
        wrong = _handed_wrongly(_given_prev_result(invocation), wanted, "the cached result")
        if wrong:
            problems.append(
                f"the runtime handed {invocation.plugin}'s {invocation.command} {wrong}"
            )
    if problems:
        raise CheckFailed("; ".join(problems))
    chained = [i.plugin for i in adds[1:]]
    verbs = " and ".join(dict.fromkeys(i.command for i in handed))
    carried = (
        f"{', '.join(chained)} kept every entry of the prevResult they got"
        if chained
        else f"{adds[0].plugin} alone: no prevResult to carry on ADD"
    )
    got = "the cached result" if with_prev_on_del or "CHECK" in verbs else "no prevResult"
    return f"{carried}; {verbs} of every plugin got {got}{note}"


def chain_drops(adds: Sequence[Invocation]) -> list[str]:
    """'<plugin> dropped <entries> from the prevResult it was given (<previous>'s result)' for
    every chained ADD whose result lacks an interface, IP, route or DNS entry it was given."""
    problems = []
    for previous, invocation in itertools.pairwise(adds):
        if not invocation.ok:
            continue
        lost, instead = result_losses(_given_prev_result(invocation), invocation.output)
        if lost:
            problem = (
                f"{invocation.plugin} dropped {', '.join(lost)} from the prevResult it was"
                f" given ({previous.plugin}'s result)"
            )
            if instead:
                problem += f"; its result has {', '.join(instead)} instead"
            problems.append(problem)
    return problems


def _wrongly_handed_adds(adds: Sequence[Invocation]) -> list[str]:
    problems = []
    for n, invocation in enumerate(adds):
        wanted = adds[n - 1].output if n else None
        source = f"{adds[n - 1].plugin}'s result" if n else "none (it is first in the chain)"
        wrong = _handed_wrongly(_given_prev_result(invocation), wanted, source)
        if wrong:
            problems.append(f"the runtime handed {invocation.plugin}'s ADD {wrong}")
    return problems


def _given_prev_result(invocation: Invocation) -> Any:
    try:
        request = json.loads(invocation.stdin)
    except ValueError:
        return None
    return request.get("prevResult") if isinstance(request, dict) else None


def _handed_wrongly(given: Any, wanted: Any, what: str) -> str:
    """'' when `given` is `wanted`; otherwise how the prevResult handed differs."""
    if given == wanted:
        return ""
    if wanted is None:
        return f"a prevResult where it should get {what}"
    if given is None:
        return f"no prevResult where it should get {what}"
    lost, extra = result_losses(wanted, given)
    differences = [f"lacks {', '.join(lost)}"] if lost else []
    differences += [f"adds {', '.join(extra)}"] if extra else []
    return f"a prevResult that is not {what}: it {'; '.join(differences) or 'differs in fields'}"


def result_losses(given: Any, result: Any) -> tuple[list[str], list[str]]:
    """(entries of the result `given` that `result` lacks, entries `result` has that `given`
    has not): interfaces (by name and sandbox), IPs (address and the interface they are on),
    routes (destination and gateway), DNS nameservers, search domains, options and domain.
    Other fields of an entry (a MAC, an MTU, a gateway of an IP) may change."""
    if not isinstance(given, dict):
        return [], []
    if not isinstance(result, dict):
        return ["everything (no result object)"], []
    old, new = _result_entries(given), _result_entries(result)
    return [e for e in old if e not in new], [e for e in new if e not in old]


def _result_entries(result: Mapping[str, Any]) -> list[str]:
    interfaces = [i for i in result.get("interfaces") or [] if isinstance(i, dict)]
    names = [_interface_text(i) for i in interfaces]
    entries = [f"interface {name}" for name in names]
    for ip in result.get("ips") or []:
        if not isinstance(ip, dict):
            continue
        index = ip.get("interface")
        on = f" on {names[index]}" if type(index) is int and 0 <= index < len(names) else ""
        entries.append(f"ip {_canonical(ip.get('address'), ipaddress.ip_interface)}{on}")
    for route in result.get("routes") or []:
        if not isinstance(route, dict):
            continue
        via = f" via {_canonical(route['gw'], ipaddress.ip_address)}" if route.get("gw") else ""
        entries.append(f"route {_canonical(route.get('dst'), _network)}{via}")
    dns = result.get("dns")
    if isinstance(dns, dict):
        for key, label in (
            ("nameservers", "nameserver"),
            ("search", "search"),
            ("options", "option"),
        ):
            values = dns.get(key)
            entries += [f"dns {label} {v}" for v in values or [] if isinstance(values, list)]
        if dns.get("domain"):
            entries.append(f"dns domain {dns['domain']}")
    return entries


_DNS_LISTS = (("nameservers", "nameserver"), ("search", "search"), ("options", "option"))


def _interface_text(interface: Mapping[str, Any]) -> str:
    sandbox = interface.get("sandbox")
    return f"{interface.get('name')} in {sandbox}" if sandbox else f"{interface.get('name')}"


def _network(value: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(value, strict=False)


def _canonical(value: Any, parse: Callable[[str], object]) -> str:
    try:
        return str(parse(str(value)))
    except ValueError:
        return str(value)


# --- checks: GC and STATUS --------------------------------------------------------------------


def _gc_setup(scope: Scope) -> tuple[JSONObject, Pod, Pod]:
    scope.suite.require_version("1.1.0", "GC")
    tiny = scope.tiny(2)
    first, second = scope.added_pod(tiny), scope.added_pod(tiny)
    _expect_full(scope, tiny, "two")
    return tiny, first, second


def _gc(scope: Scope, netconf: JSONObject, valid: Sequence[Pod]) -> None:
    for invocation in scope.gc(netconf, valid):
        if not invocation.ok:
            raise CheckFailed(f"GC failed: {invocation.error()}")


@_check(
    "gc.unlisted",
    "SPEC §2 GC, §3 Garbage-collecting",
    "GC releases exactly the attachments not listed",
)
def gc_unlisted(scope: Scope) -> str:
    tiny, first, _second = _gc_setup(scope)
    _gc(scope, tiny, [first])
    try:
        scope.added_pod(tiny)
    except PluginError as err:
        raise CheckFailed(f"GC did not release the unlisted attachment's address: {err}") from None
    try:
        scope.added_pod(tiny)
    except PluginError:
        return "range of two: GC listing one freed exactly the other"
    raise CheckFailed("GC released the address of the attachment it was told is valid")


@_check("gc.empty-list", "SPEC §2 GC", "GC with an empty valid list releases every attachment")
def gc_empty_list(scope: Scope) -> str:
    tiny, _first, _second = _gc_setup(scope)
    _gc(scope, tiny, [])
    for n in (1, 2):
        try:
            scope.added_pod(tiny)
        except PluginError as err:
            raise CheckFailed(
                f"after GC with no valid attachments, ADD {n} of 2 fails: {err}"
            ) from None
    return "range of two: both addresses free again"


@_check("status.ready", "SPEC §2 STATUS", "STATUS succeeds on a working node")
def status_ready(scope: Scope) -> str:
    scope.suite.require_version("1.1.0", "STATUS")
    scope.runtime.status(scope.netconf)
    return "ready"


@_check("output.silent", "SPEC §2 CNI operations", "DEL, CHECK, GC and STATUS print nothing")
def output_silent(scope: Scope) -> str:
    pod = scope.added_pod()
    network = scope.suite.network
    steps: list[Callable[[], object]] = []
    if versions.at_least(network.cni_version, "0.4.0") and not network.disable_check:
        steps.append(lambda: scope.check(pod))
    if scope.suite.has_version("1.1.0"):
        steps += [
            lambda: scope.runtime.status(scope.netconf),
            lambda: scope.gc(scope.netconf, [pod]),
        ]
    steps += [lambda: scope.delete(pod), lambda: scope.delete(pod)]
    for step in steps:
        try:
            step()
        except PluginError:
            pass  # a verb failing is another check's business; this one only listens
    noisy = [
        f"{i.plugin} {i.command}: {p.detail}"
        for i in scope.runtime.invocations
        for p in i.problems
        if p.kind in (ProblemKind.OUTPUT_ON_SILENT_VERB, ProblemKind.STDOUT_NOT_JSON)
    ]
    if noisy:
        raise CheckFailed("; ".join(noisy))
    verbs = sorted({i.command for i in scope.runtime.invocations} - {"ADD"})
    return f"{', '.join(verbs)} silent"


# --- checks: the Kubernetes network model ---------------------------------------------------------


@_check(
    "k8s.pod-to-pod", "Kubernetes network model", "pods reach pods with their own address (no NAT)"
)
def k8s_pod_to_pod(scope: Scope) -> str:
    _require_dynamic_addresses(scope)
    pods = [scope.added_pod(), scope.added_pod()]
    servers = [connectivity.serve(pod.ns) for pod in pods]
    try:
        probes = []
        for version in (4, 6):
            for source, target in ((pods[0], pods[1]), (pods[1], pods[0])):
                own = _pod_addresses(source.result or {}, version)
                for address in _pod_addresses(target.result or {}, version):
                    for proto in ("tcp", "udp"):
                        probes.append(_probe(source.ns, address, proto, own[0] if own else None))
    finally:
        for server in servers:
            server.stop()
    return _judge(probes, "pod to pod")


@_check("k8s.node-pod", "Kubernetes network model", "the node reaches pods and pods reach the node")
def k8s_node_pod(scope: Scope) -> str:
    pod = scope.added_pod()
    node_addresses = {a.split("/")[0] for addrs in _addresses(scope.node).values() for a in addrs}
    server = connectivity.serve(pod.ns)
    probes = []
    try:
        for address in _pod_addresses(pod.result or {}):
            for proto in ("tcp", "udp"):
                probes.append(_probe(scope.node, address, proto, None))
    finally:
        server.stop()
    for p in probes:
        if p.reached and p.seen_as not in node_addresses:
            raise CheckFailed(
                f"node -> {p.target}: the pod saw {p.seen_as}, not an address of the node"
            )
    gateways = [
        str(ip["gateway"])
        for ip in (pod.result or {}).get("ips", [])
        if ip.get("gateway") in node_addresses
    ]
    if gateways:
        server = connectivity.serve(scope.node)
        try:
            for gateway in gateways:
                own = _pod_addresses(pod.result or {}, ipaddress.ip_address(gateway).version)
                probes.append(_probe(pod.ns, gateway, "tcp", own[0] if own else None))
        finally:
            server.stop()
    return _judge(probes, "node/pod")


def _probe(source: netns_mod.Netns, target: str, proto: str, own: str | None) -> connectivity.Probe:
    for attempt in range(_PROBE_ATTEMPTS):
        result = connectivity.probe(source, target, proto, expected_source=own, timeout=1.0)
        if result.reached:
            return result
        if attempt < _PROBE_ATTEMPTS - 1:
            time.sleep(_PROBE_PAUSE)
    return result


def _judge(probes: list[connectivity.Probe], what: str) -> str:
    if not probes:
        raise CheckFailed(f"no addresses to probe {what}")
    for p in probes:
        if not p.reached:
            raise CheckFailed(f"{p.proto} to {p.target} from {p.source}: {p.seen_as}")
        if not p.unnatted:
            raise CheckFailed(
                f"{p.proto} to {p.target}: seen as {p.seen_as}, sent from {p.expected_source} (NAT)"
            )
    return f"{len(probes)} probes (TCP/UDP) reached, sources unchanged"


def select(only: Sequence[str] = ()) -> list[Check]:
    """The checks whose id is one of `only`, or starts with one followed by '.' (all when
    `only` is empty). Unknown names raise ValueError."""
    if not only:
        return list(CHECKS)
    chosen = [
        c for c in CHECKS if any(c.id == s or c.id.startswith(s.rstrip(".") + ".") for s in only)
    ]
    unknown = [
        s
        for s in only
        if not any(c.id == s or c.id.startswith(s.rstrip(".") + ".") for c in CHECKS)
    ]
    if unknown:
        raise ValueError(f"no such check: {', '.join(unknown)}")
    return chosen
