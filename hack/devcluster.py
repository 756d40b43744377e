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

Library use (tests/e2e/conftest.py): ``build_tools()``, ``up(state_dir, kubeconfig, ...) -> Cluster``,
``down(state_dir)``, ``node_manifests(doc, catalog)``, ``apply_nodes(kubeconfig, doc, ...)``.

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
"""

from __future__ import annotations

import argparse
import base64
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


def ensure_pki(pki: Path) -> None:
    """Create the CA, serving and client certificates and the service-account key pair if missing."""
    wanted = ["ca", "apiserver", "admin", "controller-manager", "scheduler", "kwok"]
    if all((pki / f"{n}.crt").exists() and (pki / f"{n}.key").exists() for n in wanted) and (
        pki / "sa.key"
    ).exists():
        return
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    def key_pem(key) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )

    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=365)

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
    _write(pki / "ca.key", key_pem(ca_key), private=True)
    _write(pki / "ca.crt", ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(name: str, cn: str, orgs: list[str], server: bool, sans: list[x509.GeneralName] = ()):
        key = ec.generate_private_key(ec.SECP256R1())
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, o) for o in orgs]
        subject.append(x509.NameAttribute(NameOID.COMMON_NAME, cn))
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        _write(pki / f"{name}.key", key_pem(key), private=True)
        _write(pki / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM))

    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
           "kubernetes.default.svc.cluster.local"]
    ips = [LOOPBACK, KUBERNETES_SERVICE_IP]
    sans = [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    issue("apiserver", "kube-apiserver", [], server=True, sans=sans)
    issue("admin", "elasticdf-dev-admin", ["system:masters"], server=False)
    issue("controller-manager", "system:kube-controller-manager", [], server=False)
    issue("scheduler", "system:kube-scheduler", [], server=False)
    # kwok acts as the kubelet of every simulated node: it gets full rights.
    issue("kwok", "kwok-controller", ["system:masters"], server=False)

    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write(pki / "sa.key", key_pem(sa_key), private=True)
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
    """Stop exactly the processes recorded in state_dir/*.pid (newest component first)."""
    state_dir = Path(state_dir)
    stopped = []
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
        json.dumps({"ports": p, "server": cluster.server, "kubeconfig": str(kubeconfig)}, indent=2) + "\n"
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


def node_manifests(doc: dict[str, Any], catalog: dict[str, Any]) -> list[dict[str, Any]]:
    """Turn a cluster description (DESIGN §5.2) into Node objects for kwok. Pure: no API calls."""
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
        cards = entry.get("cards") or []
        if not isinstance(cards, list) or not all(isinstance(c, str) for c in cards):
            raise ClusterError(f"{where}: 'cards' must be a list of card type names")
        cards = [c.lower() for c in cards]
        counts: dict[str, int] = {}
        for card in cards:
            if card not in catalog:
                raise ClusterError(f"{where}: unknown card type {card!r} (known: {', '.join(sorted(catalog))})")
            resource = catalog[card].device_plugin_resource
            counts[resource] = counts.get(resource, 0) + 1
        capacity = {
            "cpu": str(entry.get("cpu", "32")),
            "memory": str(entry.get("memory", "256Gi")),
            "pods": str(entry.get("pods", "110")),
            **{res: str(n) for res, n in sorted(counts.items())},
        }
        labels = {
            "type": "kwok",
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            LABEL_CARD_TYPES: CARD_TYPE_SEPARATOR.join(sorted(set(cards))),
        }
        switch = entry.get("switch")
        if switch is not None:
            if not isinstance(switch, str) or not _LABEL_VALUE.match(switch) or len(switch) > 63:
                raise ClusterError(f"{where}: switch {switch!r} is not a valid label value")
            labels[LABEL_SWITCH] = switch
        address = entry.get("address") or str(NODE_NET.network_address + 256 * (index // 250) + 10 + index % 250)
        if ipaddress.ip_address(address) not in NODE_NET:
            raise ClusterError(f"{where}: address {address} must lie in the fake node network {NODE_NET}")
        nodes.append({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": labels,
                "annotations": {KWOK_ANNOTATION[0]: KWOK_ANNOTATION[1], ANNOTATION_CARDS: ",".join(cards)},
            },
            "spec": {},
            "status": {
                "capacity": capacity,
                "allocatable": dict(capacity),
                "addresses": [{"type": "InternalIP", "address": address}, {"type": "Hostname", "address": name}],
            },
        })
    return nodes


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
    p_nodes = sub.add_parser("nodes", help="create/update simulated Alveo nodes from a cluster YAML")
    p_nodes.add_argument("file", type=Path)
    p_nodes.add_argument("--prune", action="store_true", help="delete simulated nodes not in the file")
    p_nodes.add_argument("--catalog", type=Path, help="extra card catalog YAML (see elasticdf cards)")
    p_nodes.add_argument("--no-wait", action="store_true", help="do not wait for the nodes to be Ready")
    sub.add_parser("env", help="print shell exports for KUBECONFIG and PATH")
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
            return 0 if info["ready"] else 3
        elif args.command == "nodes":
            import yaml

            doc = yaml.safe_load(args.file.read_text())
            res = apply_nodes(args.kubeconfig, doc, prune=args.prune, catalog_yaml=args.catalog,
                              wait=not args.no_wait)
            log(" ".join(f"{k}: {', '.join(v)};" for k, v in res.items() if v) or "nothing to do")
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
