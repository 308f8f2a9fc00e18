#!/usr/bin/env bash
# Install pycni into the nodes of an existing kind cluster: no registry, no image.
#
#   packaging/build.sh                                   # dist/cni/bin and dist/pycni-agent
#   kind create cluster --config conf/kind/kind-multi-ipv4.yaml
#   packaging/kind-install.sh [--name kind] [--datapath vxlan] [--network-policy true]
#                             [--encryption none] [--no-wait]
#
# --datapath: bridge | vxlan | ipip-always | ipip-crosssubnet | ipip-never (default vxlan);
# conf/kind/00-pycni-<datapath>.conflist is the template.
# --network-policy: true (default) or false: the agent enforces NetworkPolicy (docs/networkpolicy.md)
# and pycni-netpol is chained into the conflist; false removes both.
# --encryption: none (default) or ipsec: the VXLAN/IPIP packets between nodes travel as IPsec ESP,
# keyed by the agents (docs/encryption.md); the conflist's overlay plugin says so. Needs esp4 in the
# kernel of the machine kind runs on; with vxlan, ipip-always or ipip-crosssubnet only.
#
# For each node (a container named as the node, as kind names them), through the container
# engine (docker, or podman: KIND_EXPERIMENTAL_PROVIDER, as kind itself reads it, or whichever
# is installed) and kubectl (context kind-<name>):
#   1. the frozen plugins into /opt/cni/bin (packaging/kind/install-bundle.sh, run inside the
#      node: files renamed into place, never overwritten while containerd may run them);
#   2. the frozen agent into /opt/pycni/agent, the template into /opt/pycni/conf;
#   3. the node's conflist, the template filled with that node's pod CIDRs and InternalIP
#      (pycni.agent.agent.render_conflist, as the agent fills it), into /etc/cni/net.d under a
#      temporary name, then renamed; other pycni datapaths' conflists removed;
#   4. a systemd unit (kind nodes run systemd) that runs the agent with the kubelet's
#      kubeconfig; enabled and restarted, so it survives a node restart.
# With NetworkPolicy on, first (kubectl apply) a ClusterRole that lets the nodes' own identity
# (group system:nodes, the kubelet's kubeconfig) get/list/watch NetworkPolicies, Pods and
# Namespaces and create Events, and nothing more; with it off, that binding is deleted.
# Then waits until every node is Ready (unless --no-wait).
#
# Needs on this machine: bash, python3 (>= 3.11, to fill the template with the checkout's own
# code), kubectl, docker or podman.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DATAPATHS=(bridge vxlan ipip-always ipip-crosssubnet ipip-never)

die() { printf 'kind-install.sh: ERROR: %s\n' "$*" >&2; exit 1; }
say() { printf '==> %s\n' "$*"; }

name=kind
datapath=vxlan
network_policy=true
encryption=none
wait_ready=1
while (($#)); do
    case $1 in
        --name) name=${2:?--name needs a value}; shift 2 ;;
        --datapath) datapath=${2:?--datapath needs a value}; shift 2 ;;
        --network-policy) network_policy=${2:?--network-policy needs true or false}; shift 2 ;;
        --network-policy=*) network_policy=${1#*=}; shift ;;
        --encryption) encryption=${2:?--encryption needs none or ipsec}; shift 2 ;;
        --encryption=*) encryption=${1#*=}; shift ;;
        --no-wait) wait_ready=0; shift ;;
        -h | --help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument '$1' (try --help)" ;;
    esac
done

case $network_policy in
    true | false) ;;
    *) die "--network-policy '$network_policy': expected true or false" ;;
esac
template=$repo/conf/kind/00-pycni-$datapath.conflist
[[ -f $template ]] || die "unknown datapath '$datapath': choose one of ${DATAPATHS[*]}"
case $encryption in
    none) ;;
    ipsec)
        case $datapath in
            vxlan | ipip-always | ipip-crosssubnet) ;;
            *) die "--encryption ipsec encrypts the tunnel packets: datapath '$datapath' has none (use vxlan, ipip-always or ipip-crosssubnet)" ;;
        esac ;;
    *) die "--encryption '$encryption': expected none or ipsec" ;;
esac
bundle=$repo/dist/cni/bin
agent=$repo/dist/pycni-agent
[[ -x $bundle/pycni-host-local ]] || die "$bundle has no frozen plugins: run packaging/build.sh"
[[ -x $agent/pycni-agent ]] || die "$agent has no frozen agent: run packaging/build.sh"

engine=${KIND_EXPERIMENTAL_PROVIDER:-}
if [[ -z $engine ]]; then
    if command -v docker >/dev/null; then engine=docker
    elif command -v podman >/dev/null; then engine=podman
    else die "neither docker nor podman is installed"
    fi
fi
command -v "$engine" >/dev/null || die "$engine is not installed"
command -v kubectl >/dev/null || die "kubectl is not installed"
kubectl=(kubectl --context "kind-$name")

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT

# --- every node's conflist, filled from the Node objects ------------------------------------
say "reading the nodes of kind cluster '$name' (kubectl --context kind-$name)"
"${kubectl[@]}" get nodes -o json >"$scratch/nodes.json" \
    || die "kubectl could not list the nodes of cluster '$name' (is it running? kind get clusters)"
PYTHONPATH=$repo python3 - "$scratch" "$template" "$network_policy" "$encryption" >"$scratch/nodes.txt" <<'EOF'
import json, sys
from pathlib import Path
from pycni.agent.agent import POLICY_STATE_DIR, NodeInfo, render_conflist

scratch, template = Path(sys.argv[1]), json.loads(Path(sys.argv[2]).read_text())
policy = POLICY_STATE_DIR if sys.argv[3] == "true" else None
items = json.loads((scratch / "nodes.json").read_text())["items"]
missing = [n.name for n in map(NodeInfo.of, items) if not n.pod_cidrs]
if missing or not items:
    sys.exit(f"kind-install.sh: ERROR: no pod CIDR on node(s) {', '.join(missing) or '(none listed)'}:"
             " the controller manager allocates them (kind's default); wait and try again")
for node in map(NodeInfo.of, items):
    conflist = render_conflist(template, node, policy, sys.argv[4])
    (scratch / f"{node.name}.conflist").write_text(json.dumps(conflist, indent=2) + "\n")
    print(node.name)
EOF
mapfile -t nodes <"$scratch/nodes.txt"
((${#nodes[@]})) || die "the cluster has no nodes"

# --- NetworkPolicy: what the agent may read with the node's own (kubelet) credentials -----
if [[ $network_policy == true ]]; then
    say "granting the nodes read access to NetworkPolicies, Pods, Namespaces (ClusterRole pycni-node-netpol)"
    "${kubectl[@]}" apply -f - <"$repo/packaging/kind/pycni-node-netpol.yaml" ||
        die "kubectl could not apply the ClusterRole pycni-node-netpol"
else
    "${kubectl[@]}" delete clusterrolebinding,clusterrole pycni-node-netpol --ignore-not-found
fi

conf_name=00-pycni-$datapath.conflist
for node in "${nodes[@]}"; do
    say "$node: installing the $datapath datapath"
    "$engine" exec "$node" mkdir -p /opt/pycni/conf /etc/cni/net.d /etc/cni/pycni
    # 1. plugins
    "$engine" exec "$node" rm -rf /opt/pycni/bundle
    "$engine" cp "$bundle" "$node:/opt/pycni/bundle"
    "$engine" cp "$repo/packaging/kind/install-bundle.sh" "$node:/opt/pycni/install-bundle.sh"
    "$engine" exec "$node" /opt/pycni/install-bundle.sh /opt/pycni/bundle /opt/cni/bin
    "$engine" exec "$node" rm -rf /opt/pycni/bundle
    # 2. agent and template
    "$engine" exec "$node" rm -rf /opt/pycni/agent.new
    "$engine" cp "$agent" "$node:/opt/pycni/agent.new"
    "$engine" cp "$template" "$node:/opt/pycni/conf/$conf_name"
    # 3. the conflist: written aside (libcni reads only .conf/.conflist/.json), then renamed
    "$engine" cp "$scratch/$node.conflist" "$node:/etc/cni/net.d/.$conf_name.tmp"
    "$engine" exec "$node" mv -f "/etc/cni/net.d/.$conf_name.tmp" "/etc/cni/net.d/$conf_name"
    for other in "${DATAPATHS[@]}"; do
        [[ $other == "$datapath" ]] || "$engine" exec "$node" rm -f "/etc/cni/net.d/00-pycni-$other.conflist"
    done
    # 4. the agent as a systemd service
    cat >"$scratch/pycni-agent.service" <<EOF
[Unit]
Description=pycni node agent (peers file and overlay from the Node objects; NetworkPolicy)
After=kubelet.service

[Service]
ExecStart=/opt/pycni/agent/pycni-agent --node-name $node --template /opt/pycni/conf/$conf_name --conf-dir /etc/cni/net.d --kubeconfig /etc/kubernetes/kubelet.conf --network-policy=$network_policy --policy-state-dir /run/pycni/netpol --encryption=$encryption
Restart=always
RestartSec=2

[Install]
WantedBy=multi-user.target
EOF
    "$engine" cp "$scratch/pycni-agent.service" "$node:/etc/systemd/system/pycni-agent.service"
    # (not loaded yet on a first install: nothing to stop then)
    "$engine" exec "$node" systemctl stop pycni-agent.service 2>/dev/null || true
    "$engine" exec "$node" rm -rf /opt/pycni/agent
    "$engine" exec "$node" mv /opt/pycni/agent.new /opt/pycni/agent
    "$engine" exec "$node" systemctl daemon-reload
    "$engine" exec "$node" systemctl enable --now pycni-agent.service
done

if ((wait_ready)); then
    say "waiting for every node to be Ready"
    "${kubectl[@]}" wait --for=condition=Ready nodes --all --timeout=180s
fi
say "done: ${#nodes[@]} node(s) run pycni ($datapath); the agent's log on a node:" \
    "$engine exec ${nodes[0]} journalctl -u pycni-agent"
