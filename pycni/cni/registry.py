"""The plugin registry: every plugin pycni ships, one row each, and everything else reads it.

Adding a plugin is its module (a pycni.cni.plugin.Plugin: NAME, parse_config, cmd_add, cmd_del,
cmd_check), its schema (conf/schemas/<schema>.schema.json; `packaging/gen_validator.py` then
writes pycni/validators/<schema>.py, which the module validates with) and one row in PLUGINS
below. Who reads the rows:

- packaging/pycni.spec, through packaging/plugin_table.py (which checks them): one executable
  `pycni-<name>` per row, its entry script `pycni.cni.entry.main("<module>")`;
- pycni.cni.delegate: a main plugin whose `ipam.type` names an `in_process` row runs that
  plugin's verb in its own process instead of exec'ing it (one interpreter start saved);
- pycni.conformance.validate (`pycni validate`): the schema a plugin's config is checked
  against, by its `type`, and for `ipam` rows also by `ipam.type`;
- pycni.agent.reconcile (`pycni reconcile`) and pycni.agent.agent: the `reconciler` rows,
  multi-node datapaths that take a localIP and a peers file and have a node reconciler;
- the tests: tests/packaging/test_frozen_bundle.py and tests/cni/test_startup_imports.py run
  every row (`allowed_imports`: the modules of the start-up budget's forbidden list this plugin
  may load on its call path, e.g. "subprocess" to exec a delegate); tests/cni/test_registry.py
  checks that the rows and the modules agree, and has mypy check every row's module against the
  Plugin Protocol.

Why a Python module of literal rows, not a text file: pycni.cni.delegate reads the table on
every ADD, CHECK and DEL of bridge, vxlan and ipip, each a fresh process under the start-up
budget. As a module the table is one more .pyc in the frozen runtime, loaded the way every
other module is (one open and read, its rows built from constants in its code object, no
parsing, no import); a text file would have to be shipped as data, found beside the frozen
modules on every call and parsed there by code that would ship too. The module imports nothing
(not even pycni), so packaging/plugin_table.py can load it by path for PyInstaller's spec,
which runs before pycni is importable; and mypy checks the rows' types.
"""

from __future__ import annotations


class Entry:
    """One plugin. Its executable, and the `type` a network config names it by, is
    pycni-<cni_type>."""

    __slots__ = (
        "allowed_imports",
        "cni_type",
        "executable",
        "in_process",
        "ipam",
        "module",
        "reconciler",
        "schema",
    )

    def __init__(
        self,
        cni_type: str,
        module: str,
        schema: str,
        *,
        ipam: bool = False,
        in_process: bool = False,
        reconciler: bool = False,
        allowed_imports: tuple[str, ...] = (),
    ) -> None:
        self.cni_type = cni_type  # "host-local"
        self.executable = "pycni-" + cni_type  # "pycni-host-local"
        self.module = module  # its verbs: "pycni.ipam.host_local.plugin"
        self.schema = schema  # conf/schemas/<schema>.schema.json
        self.ipam = ipam  # an IPAM plugin: main plugins name it in ipam.type
        self.in_process = in_process  # delegated to (as IPAM), it runs in the caller's process
        self.reconciler = reconciler  # a multi-node datapath with a node reconciler
        self.allowed_imports = frozenset(allowed_imports)  # start-up budget exceptions

    def __repr__(self) -> str:
        return f"Entry({self.cni_type!r}, {self.module!r}, {self.schema!r})"


# fmt: off
PLUGINS = (
    #     name          module                          schema        roles
    Entry("host-local", "pycni.ipam.host_local.plugin", "host-local", ipam=True, in_process=True),
    Entry("bridge",     "pycni.plugins.bridge",         "bridge"),
    Entry("vxlan",      "pycni.plugins.vxlan",          "vxlan",      reconciler=True),
    Entry("ipip",       "pycni.plugins.ipip",           "ipip",       reconciler=True),
    Entry("portmap",    "pycni.plugins.portmap",        "portmap"),
    Entry("bandwidth",  "pycni.plugins.bandwidth",      "bandwidth"),
    Entry("netpol",     "pycni.plugins.netpol",         "netpol"),
)
# fmt: on

# The row of a plugin by its executable's name (a config's `type`, or its `ipam.type`).
BY_EXECUTABLE = {entry.executable: entry for entry in PLUGINS}
