"""`python -m pycni.lab.k8s build|up|down|kubectl|exec|e2e ...` (packaging/k8s.sh runs this).

build and e2e live here (build.py, e2e.py); up, down, kubectl and exec are the cluster's
(cluster.py). Each subcommand gets the arguments after its name and returns the exit status.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence

USAGE = """usage: packaging/k8s.sh SUBCOMMAND [ARGS...]
  build                                       build Kubernetes, e2e.test and the images (cached)
  up [--nodes N] [--datapath bridge|vxlan|ipip-never]
                                              start the cluster (default 3 nodes, vxlan)
  down                                        remove everything `up` made (idempotent)
  kubectl ARGS...                             kubectl against the cluster
  exec NODE CMD...                            run CMD inside node NODE's namespaces
  e2e [--focus RE] [--skip RE]                Kubernetes' e2e network specs, summary table
"""


def _build(argv: Sequence[str]) -> int:
    from pycni.lab.k8s import build

    if argv:
        print(f"k8s build takes no arguments, got {list(argv)}", file=sys.stderr)
        return 2
    return build.main()


def _e2e(argv: Sequence[str]) -> int:
    from pycni.lab.k8s import e2e

    return e2e.main(argv)


def _cluster(function: str) -> Callable[[Sequence[str]], int]:
    def run(argv: Sequence[str]) -> int:
        try:
            # imported by name: cluster.py is helper k8scluster's module
            cluster = importlib.import_module("pycni.lab.k8s.cluster")
        except ImportError as error:
            raise NotImplementedError(
                f"pycni.lab.k8s.cluster cannot be imported ({error}); helper k8scluster owns "
                "up/down/kubectl/exec"
            ) from error
        entry = getattr(cluster, function, None)
        if entry is None:
            raise NotImplementedError(
                f"pycni.lab.k8s.cluster.{function} is not there yet (helper k8scluster owns "
                "up/down/kubectl/exec)"
            )
        result: int = entry(list(argv))
        return result

    return run


COMMANDS: dict[str, Callable[[Sequence[str]], int]] = {
    "build": _build,
    "up": _cluster("main_up"),
    "down": _cluster("main_down"),
    "kubectl": _cluster("main_kubectl"),
    "exec": _cluster("main_exec"),
    "e2e": _e2e,
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if args else 2
    command = COMMANDS.get(args[0])
    if command is None:
        print(f"k8s: unknown subcommand {args[0]!r}\n{USAGE}", file=sys.stderr, end="")
        return 2
    try:
        return command(args[1:])
    except NotImplementedError as error:
        print(f"k8s {args[0]}: not implemented: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
