"""The lane cluster's certificates and kubeconfigs, made with the `openssl` command.

What kubeadm makes for a kind cluster, cut to what the lane's components use: one CA that
signs every serving and client certificate, the API server's serving certificate (its names:
the Service IP 10.96.0.1, the control-plane node's address, `kubernetes.default.svc...`), one
client certificate per identity (admin, controller manager, scheduler, kube-proxy, each node's
kubelet as `system:node:<name>` in `system:nodes`, the API server's kubelet client) and the
service-account key pair. EC P-256 keys (fast to make); the service-account key is RSA, the
algorithm every component of v1.20 accepts for tokens.

Operator and test path (the Kubernetes lane), never a plugin's.
"""

from __future__ import annotations

import base64
import json
import secrets
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

DAYS = "3650"


class PkiError(RuntimeError):
    """An openssl command failed; the message carries its stderr."""


@dataclass(frozen=True)
class KeyPair:
    """A certificate and its key, as files."""

    cert: Path
    key: Path


def _openssl(*args: str) -> None:
    done = subprocess.run(["openssl", *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise PkiError(f"failed to run openssl {args[0]}: {done.stderr.strip()}")


def make_ca(directory: Path, name: str = "ca") -> KeyPair:
    """A self-signed CA `<name>.crt`/`<name>.key` in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    _openssl(
        "req", "-x509", "-new", "-nodes", "-days", DAYS,
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(pair.key), "-out", str(pair.cert),
        "-subj", "/CN=pycni-k8s-ca",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,digitalSignature,keyCertSign,cRLSign",
    )  # fmt: skip
    return pair


def issue(
    ca: KeyPair,
    directory: Path,
    name: str,
    *,
    common_name: str,
    organizations: Sequence[str] = (),
    dns_names: Sequence[str] = (),
    ip_addresses: Sequence[str] = (),
    server: bool = False,
) -> KeyPair:
    """A certificate signed by `ca` for `common_name` (the user name Kubernetes sees) in the
    `organizations` (its groups); with `server` also for serving, under the given names."""
    pair = KeyPair(directory / f"{name}.crt", directory / f"{name}.key")
    csr = directory / f"{name}.csr"
    extensions = directory / f"{name}.ext"
    subject = "".join(f"/O={org}" for org in organizations) + f"/CN={common_name}"
    usages = "serverAuth,clientAuth" if server else "clientAuth"
    lines = [
        "basicConstraints=critical,CA:FALSE",
        "keyUsage=critical,digitalSignature",
        f"extendedKeyUsage={usages}",
    ]
    alt_names = [f"DNS:{dns}" for dns in dns_names] + [f"IP:{ip}" for ip in ip_addresses]
    if alt_names:
        lines.append("subjectAltName=" + ",".join(alt_names))
    extensions.write_text("\n".join(lines) + "\n")
    _openssl(
        "req", "-new", "-nodes",
        "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", str(pair.key), "-out", str(csr), "-subj", subject,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", str(csr), "-CA", str(ca.cert), "-CAkey", str(ca.key),
        "-set_serial", "0x" + secrets.token_hex(16), "-days", DAYS,
        "-extfile", str(extensions), "-out", str(pair.cert),
    )  # fmt: skip
    csr.unlink()
    extensions.unlink()
    return pair


def make_service_account_keys(directory: Path) -> KeyPair:
    """The key that signs service-account tokens (`sa.key`) and its public half (`sa.pub`,
    in the `cert` slot: what the API server verifies tokens with)."""
    pair = KeyPair(directory / "sa.pub", directory / "sa.key")
    _openssl(
        "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", str(pair.key)
    )
    _openssl("pkey", "-in", str(pair.key), "-pubout", "-out", str(pair.cert))
    return pair


def kubeconfig(ca: KeyPair, client: KeyPair, server: str, user: str) -> str:
    """A kubeconfig with the CA and the client certificate embedded (as kubeadm writes
    kubelet.conf and admin.conf), context `pycni-k8s`. JSON, which is YAML."""

    def data(path: Path) -> str:
        return base64.b64encode(path.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "pycni-k8s",
                "cluster": {"server": server, "certificate-authority-data": data(ca.cert)},
            }
        ],
        "users": [
            {
                "name": user,
                "user": {
                    "client-certificate-data": data(client.cert),
                    "client-key-data": data(client.key),
                },
            }
        ],
        "contexts": [{"name": "pycni-k8s", "context": {"cluster": "pycni-k8s", "user": user}}],
        "current-context": "pycni-k8s",
        "preferences": {},
    }
    return json.dumps(config, indent=2) + "\n"
