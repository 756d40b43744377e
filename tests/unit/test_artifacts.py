"""The model fetcher (elasticdf_partitioner.artifacts) against real servers on 127.0.0.1: an http.server thread
for http://, the CNCF distribution registry (built by hack/build-tools.sh) for oci://, and files for file://
and pvc://; and the format detection of elasticdf_partitioner.modelio."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import json
import os
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import onnx
import pytest
from elasticdf_partitioner.artifacts import (
    DIGEST_FIELD,
    FETCH_FAILED,
    INVALID_SPEC,
    MODEL_INVALID,
    ONNX_FIELD,
    FetchPolicy,
    ModelError,
    fetch,
)
from elasticdf_partitioner.modelio import load_model
from modelserver import ModelServer, Route
from onnx import TensorProto, helper
from test_finn_io import NEW, small_net

ROOT = Path(__file__).resolve().parents[2]
REGISTRY = Path(os.environ.get("ELASTICDF_CACHE", ROOT / ".cache")) / "bin" / "registry"
DATA = b"onnx-bytes-" * 1000
DIGEST = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def policy(tmp_path, sleeps) -> FetchPolicy:
    return FetchPolicy(cache_dir=tmp_path / "cache", max_bytes=1 << 20, file_root=tmp_path / "models",
                       pvc_root=tmp_path / "pvc", read_timeout=2.0, retries=3, sleep=sleeps.append)


def error(call) -> ModelError:
    with pytest.raises(ModelError) as info:
        call()
    return info.value


# ---- http(s) ------------------------------------------------------------------------------------------------

def test_http_fetch_verifies_and_caches_by_digest(policy):
    with ModelServer({"/m.onnx": Route(DATA)}) as server:
        path = fetch(server.url("/m.onnx"), f"sha256:{DIGEST}", policy)
        assert path.read_bytes() == DATA and path.name == f"{DIGEST}.onnx"
        again = fetch(server.url("/m.onnx"), DIGEST, policy)
        assert again == path and server.routes["/m.onnx"].hits == 1  # the second fetch did no network I/O
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no partial file left behind


def test_http_needs_a_digest(policy):
    err = error(lambda: fetch("http://127.0.0.1:9/m.onnx", None, policy))
    assert err.reason == INVALID_SPEC and str(err).startswith(DIGEST_FIELD) and "required" in str(err)
    bad = error(lambda: fetch("http://127.0.0.1:9/m.onnx", "sha256:abc", policy))
    assert bad.reason == INVALID_SPEC and "not a sha256 digest" in str(bad)


def test_wrong_digest_is_refused_and_not_cached(policy):
    wrong = "ab" * 32
    with ModelServer({"/m.onnx": Route(DATA)}) as server:
        err = error(lambda: fetch(server.url("/m.onnx"), wrong, policy))
    assert err.reason == FETCH_FAILED and not err.transient
    assert f"{DIGEST_FIELD}: digest mismatch: expected sha256:{wrong}, got sha256:{DIGEST}" in str(err)
    assert list((policy.cache_dir / "sha256").iterdir()) == []


def test_transient_errors_are_retried_with_backoff(policy, sleeps):
    with ModelServer({"/m.onnx": Route(DATA, fail_first=2)}) as server:
        assert fetch(server.url("/m.onnx"), DIGEST, policy).read_bytes() == DATA
        assert server.routes["/m.onnx"].hits == 3
    assert sleeps == [0.5, 1.0]


def test_persistent_5xx_gives_up_after_bounded_retries(policy, sleeps):
    with ModelServer({"/m.onnx": Route(DATA, fail_first=99)}) as server:
        err = error(lambda: fetch(server.url("/m.onnx"), DIGEST, policy))
        assert server.routes["/m.onnx"].hits == 4
    assert err.reason == FETCH_FAILED and err.transient and "HTTP 503" in str(err) and "4 attempts" in str(err)
    assert str(err).startswith(ONNX_FIELD) and sleeps == [0.5, 1.0, 2.0]


def test_client_errors_are_not_retried(policy):
    with ModelServer({"/gone.onnx": Route(DATA, status=404)}) as server:
        err = error(lambda: fetch(server.url("/gone.onnx"), DIGEST, policy))
        assert server.routes["/gone.onnx"].hits == 1
    assert err.reason == FETCH_FAILED and not err.transient and "HTTP 404" in str(err)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_connection_refused(policy, sleeps):
    err = error(lambda: fetch(f"http://127.0.0.1:{free_port()}/m.onnx", DIGEST, policy))
    assert err.reason == FETCH_FAILED and err.transient and "connection refused" in str(err)
    assert len(sleeps) == policy.retries


def test_truncated_body(policy):
    with ModelServer({"/m.onnx": Route(DATA, truncate_at=100)}) as server:
        err = error(lambda: fetch(server.url("/m.onnx"), DIGEST, policy))
    assert err.reason == FETCH_FAILED and "connection broke after 100 of 11000 bytes" in str(err)


def test_a_stalled_server_times_out(policy):
    quick = FetchPolicy(cache_dir=policy.cache_dir, read_timeout=0.3, retries=0)
    with ModelServer({"/m.onnx": Route(DATA, stall_seconds=2)}) as server:
        started = time.monotonic()
        err = error(lambda: fetch(server.url("/m.onnx"), DIGEST, quick))
    assert time.monotonic() - started < 1.5
    assert err.reason == FETCH_FAILED and "timed out" in str(err)


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "no-length"])
def test_size_limit(policy, chunked):
    small = FetchPolicy(cache_dir=policy.cache_dir, max_bytes=4096)
    with ModelServer({"/big.onnx": Route(DATA, chunked=chunked)}) as server:
        err = error(lambda: fetch(server.url("/big.onnx"), DIGEST, small))
    assert err.reason == FETCH_FAILED and "too large" in str(err) and "the limit is 4096 bytes" in str(err)
    assert list((policy.cache_dir / "sha256").iterdir()) == []  # no partial file left behind


def test_unknown_scheme(policy):
    err = error(lambda: fetch("ftp://example.org/m.onnx", DIGEST, policy))
    assert err.reason == INVALID_SPEC
    assert str(err) == f"{ONNX_FIELD}: scheme 'ftp' not supported (allowed: https, http, oci, file, pvc)"


# ---- file:// and pvc:// --------------------------------------------------------------------------------------

def test_file_uris_only_below_the_root(policy, tmp_path):
    root = policy.file_root
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "m.onnx").write_bytes(DATA)
    (tmp_path / "secret.onnx").write_bytes(DATA)
    (root / "escape.onnx").symlink_to(tmp_path / "secret.onnx")
    assert fetch(f"file://{root}/sub/m.onnx", None, policy).read_bytes() == DATA
    assert fetch(f"file://{root}/sub/m.onnx", DIGEST, policy) == root.resolve() / "sub" / "m.onnx"
    for uri in (f"file://{root}/../secret.onnx", f"file://{root}/escape.onnx", "file:///etc/passwd"):
        err = error(lambda uri=uri: fetch(uri, None, policy))
        assert err.reason == INVALID_SPEC and "outside the allowed root" in str(err), uri
    wrong = error(lambda: fetch(f"file://{root}/sub/m.onnx", "cd" * 32, policy))
    assert wrong.reason == FETCH_FAILED and "digest mismatch" in str(wrong)
    missing = error(lambda: fetch(f"file://{root}/nope.onnx", None, policy))
    assert missing.reason == FETCH_FAILED and "no such file" in str(missing)
    off = error(lambda: fetch(f"file://{root}/sub/m.onnx", None, FetchPolicy(cache_dir=tmp_path)))
    assert off.reason == INVALID_SPEC and "modelFetch.fileRoot" in str(off)


def test_pvc_uris_read_the_mounted_claim(policy):
    claim = policy.pvc_root / "models"
    claim.mkdir(parents=True)
    (claim / "m.onnx").write_bytes(DATA)
    assert fetch("pvc://models/m.onnx", DIGEST, policy).read_bytes() == DATA
    err = error(lambda: fetch("pvc://other/m.onnx", None, policy))
    assert err.reason == INVALID_SPEC and "claim 'other' is not mounted" in str(err)
    escape = error(lambda: fetch("pvc://models/../models2/m.onnx", None, policy))
    assert escape.reason == INVALID_SPEC


def test_policy_round_trips_through_the_environment(tmp_path):
    policy = FetchPolicy(cache_dir=tmp_path, max_bytes=123, file_root=Path("/models"),
                         plain_http_registries=("reg.local:5000",))
    env = {**policy.env(), "ELASTICDF_MODEL_CACHE": str(tmp_path)}
    assert FetchPolicy.from_env(env) == policy


# ---- oci:// against the real registry ----------------------------------------------------------------------

needs_registry = pytest.mark.skipif(not REGISTRY.exists(), reason=f"{REGISTRY} is not built "
                                    "(hack/build-tools.sh registry)")
USER, PASSWORD = "puller", "s3cret"
EMPTY = b"{}"


@contextlib.contextmanager
def running_registry(state: Path, auth: dict) -> Iterator[str]:
    """The CNCF registry on a free loopback port with `auth`; yields host:port, stops it at the end."""
    port = free_port()
    (state / "config.yml").write_text(json.dumps({
        "version": 0.1, "log": {"level": "error", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(state / "data")}},
        "http": {"addr": f"127.0.0.1:{port}"}, "auth": auth}))
    proc = subprocess.Popen([str(REGISTRY), "serve", str(state / "config.yml")], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break  # 200: it is up, without auth
            except urllib.error.HTTPError:
                break  # 401: it is up
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the registry did not start") from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Basic auth (htpasswd)."""
    bcrypt = pytest.importorskip("bcrypt")
    state = tmp_path_factory.mktemp("registry")
    (state / "htpasswd").write_bytes(USER.encode() + b":" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)))
    with running_registry(state, {"htpasswd": {"realm": "elasticdf-test", "path": str(state / "htpasswd")}}) as r:
        yield r


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class TokenService:
    """A docker token service on 127.0.0.1: checks USER/PASSWORD (basic) and answers an ES256 JWT that the
    registry verifies against the JWKS of KEY (what Docker Hub, GHCR, Harbor do for bearer auth)."""

    def __init__(self, state: Path):
        from cryptography.hazmat.primitives.asymmetric import ec

        self.key = ec.generate_private_key(ec.SECP256R1())
        numbers = self.key.public_key().public_numbers()
        jwk = {"kty": "EC", "crv": "P-256", "kid": "test-key", "use": "sig", "alg": "ES256",
               "x": b64url(numbers.x.to_bytes(32, "big")), "y": b64url(numbers.y.to_bytes(32, "big"))}
        self.jwks = state / "jwks.json"
        self.jwks.write_text(json.dumps({"keys": [jwk]}))
        self.requests = 0

    def token(self, scope: str) -> str:
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

        _, repo, actions = scope.split(":")
        now = int(time.time())
        claims = {"iss": "elasticdf-test", "sub": USER, "aud": "test-registry", "exp": now + 300, "nbf": now - 10,
                  "iat": now, "jti": str(now), "access": [{"type": "repository", "name": repo,
                                                           "actions": actions.split(",")}]}
        header = {"alg": "ES256", "typ": "JWT", "kid": "test-key"}
        signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self.key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    @contextlib.contextmanager
    def serving(self) -> Iterator[str]:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server's name
                service.requests += 1
                expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"token": service.token(query["scope"])}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/token"
        finally:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def bearer_registry(tmp_path_factory):
    """Token (bearer) auth: the registry sends clients to TokenService."""
    state = tmp_path_factory.mktemp("bearer-registry")
    service = TokenService(state)
    with service.serving() as realm:
        auth = {"token": {"realm": realm, "service": "test-registry", "issuer": "elasticdf-test",
                          "jwks": str(service.jwks)}}
        with running_registry(state, auth) as r:
            yield r, service, realm


def _bearer_push_token(realm: str, repo: str) -> str:
    basic = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    query = urllib.parse.urlencode({"service": "test-registry", "scope": f"repository:{repo}:pull,push"})
    request = urllib.request.Request(f"{realm}?{query}", headers={"Authorization": f"Basic {basic}"})
    return json.loads(urllib.request.urlopen(request, timeout=10).read())["token"]


BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()


def _request(method: str, url: str, data: bytes | None = None, content_type: str | None = None,
             authorization: str = BASIC):
    headers = {"Authorization": authorization}
    if content_type:
        headers["Content-Type"] = content_type
    return urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method), timeout=10)


def push(registry: str, repo: str, tag: str, layers: list[tuple[bytes, str, str]], authorization: str = BASIC) -> str:
    """Push blobs and an ORAS-style manifest with plain HTTP; returns the manifest digest."""
    base = f"http://{registry}/v2/{repo}"
    for blob in [EMPTY] + [data for data, _, _ in layers]:
        location = _request("POST", f"{base}/blobs/uploads/", authorization=authorization).headers["Location"]
        location = location if location.startswith("http") else f"http://{registry}{location}"
        sep = "&" if "?" in location else "?"
        _request("PUT", f"{location}{sep}digest=sha256:{hashlib.sha256(blob).hexdigest()}", blob,
                 "application/octet-stream", authorization)
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "artifactType": "application/vnd.onnx.model",
        "config": {"mediaType": "application/vnd.oci.empty.v1+json", "size": 2,
                   "digest": f"sha256:{hashlib.sha256(EMPTY).hexdigest()}"},
        "layers": [{"mediaType": media, "size": len(data), "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
                    "annotations": {"org.opencontainers.image.title": title}} for data, media, title in layers],
    }).encode()
    _request("PUT", f"{base}/manifests/{tag}", manifest, "application/vnd.oci.image.manifest.v1+json", authorization)
    return hashlib.sha256(manifest).hexdigest()


@pytest.fixture
def docker_config(tmp_path) -> Path:
    def write(registry: str, user: str = USER, password: str = PASSWORD) -> Path:
        path = tmp_path / f"config-{user}.json"
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        path.write_text(json.dumps({"auths": {registry: {"auth": auth}}}))
        return path
    return write


@needs_registry
def test_oci_pull_by_tag_and_digest(registry, policy, docker_config):
    manifest = push(registry, "models/small", "v1", [(DATA, "application/vnd.onnx.model", "small.onnx")])
    pulling = FetchPolicy(cache_dir=policy.cache_dir, docker_config=docker_config(registry))
    path = fetch(f"oci://{registry}/models/small:v1", None, pulling)
    assert path.read_bytes() == DATA and path.name == f"{DIGEST}.onnx"
    assert fetch(f"oci://{registry}/models/small@sha256:{manifest}", DIGEST, pulling) == path
    wrong = error(lambda: fetch(f"oci://{registry}/models/small:v1", "ef" * 32, pulling))
    assert wrong.reason == FETCH_FAILED and f"{DIGEST_FIELD}: digest mismatch" in str(wrong)


@needs_registry
def test_oci_oras_default_layer_type_with_onnx_title(registry, policy, docker_config):
    data = DATA + b"2"
    push(registry, "models/plain", "latest", [(b"readme", "text/plain", "README"),
                                              (data, "application/vnd.oci.image.layer.v1.tar", "m.onnx")])
    pulling = FetchPolicy(cache_dir=policy.cache_dir, docker_config=docker_config(registry))
    assert fetch(f"oci://{registry}/models/plain", None, pulling).read_bytes() == data


@needs_registry
def test_oci_errors(registry, policy, docker_config):
    push(registry, "models/notonnx", "v1", [(b"hello", "text/plain", "hello.txt")])
    pulling = FetchPolicy(cache_dir=policy.cache_dir, docker_config=docker_config(registry), retries=0)
    layers = error(lambda: fetch(f"oci://{registry}/models/notonnx:v1", None, pulling))
    assert layers.reason == MODEL_INVALID and "exactly one ONNX layer" in str(layers) and "text/plain" in str(layers)
    missing = error(lambda: fetch(f"oci://{registry}/models/small:nope", None, pulling))
    assert missing.reason == FETCH_FAILED and "manifest not found" in str(missing)
    anonymous = FetchPolicy(cache_dir=policy.cache_dir, retries=0)
    denied = error(lambda: fetch(f"oci://{registry}/models/notonnx:v1", None, anonymous))
    assert denied.reason == FETCH_FAILED and "modelFetch.pullSecret" in str(denied)
    wrong = FetchPolicy(cache_dir=policy.cache_dir, docker_config=docker_config(registry, "puller", "nope"))
    refused = error(lambda: fetch(f"oci://{registry}/models/notonnx:v1", None, wrong))
    assert refused.reason == FETCH_FAILED and "refused access" in str(refused)
    bad = error(lambda: fetch(f"oci://{registry}/Bad Repo:v1", None, pulling))
    assert bad.reason == INVALID_SPEC


@needs_registry
def test_oci_bearer_token_auth(bearer_registry, policy, docker_config):
    registry, service, realm = bearer_registry
    token = _bearer_push_token(realm, "models/tok")
    push(registry, "models/tok", "v1", [(DATA, "application/vnd.onnx.model", "m.onnx")], f"Bearer {token}")
    before = service.requests
    pulling = FetchPolicy(cache_dir=policy.cache_dir, docker_config=docker_config(registry))
    assert fetch(f"oci://{registry}/models/tok:v1", DIGEST, pulling).read_bytes() == DATA
    assert service.requests == before + 1  # one token for the manifest and the blob
    wrong = FetchPolicy(cache_dir=policy.cache_dir / "other", docker_config=docker_config(registry, USER, "nope"))
    err = error(lambda: fetch(f"oci://{registry}/models/tok:v1", None, wrong))
    assert err.reason == FETCH_FAILED and "token service answered HTTP 401" in str(err)


# ---- format detection -----------------------------------------------------------------------------------------

def save(model: onnx.ModelProto, path: Path) -> Path:
    onnx.save(model, str(path))
    return path


def test_finn_dataflow_onnx_is_detected(tmp_path):
    graph = load_model(save(small_net(NEW), tmp_path / "net.onnx"), "mine")
    assert graph.name == "mine" and len(graph.layers) == 12


def plain(op: str, domain: str = "") -> onnx.ModelProto:
    nodes = [helper.make_node(op, ["x"], ["y"], name="first", domain=domain)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    return helper.make_model(graph)


def test_other_onnx_names_the_first_node_and_what_is_supported(tmp_path):
    err = error(lambda: load_model(save(plain("Relu"), tmp_path / "relu.onnx")))
    assert err.reason == MODEL_INVALID and str(err).startswith(ONNX_FIELD)
    assert "node 'first' (op Relu, domain ai.onnx)" in str(err) and "FINN dataflow ONNX" in str(err)


def test_unsupported_finn_op_names_node_and_op(tmp_path):
    model = small_net(NEW)
    model.graph.node[3].op_type = "FancyNewOp_hls"
    err = error(lambda: load_model(save(model, tmp_path / "fancy.onnx")))
    assert err.reason == MODEL_INVALID and "MVAU_0" in str(err) and "FancyNewOp_hls" in str(err)


def test_qonnx_is_dispatched_to_its_importer(tmp_path):
    try:
        load_model(save(plain("Quant", "qonnx.custom_op.general"), tmp_path / "q.onnx"))
    except ModelError as err:  # the importer's complaint about this tiny graph (or its absence), not ours
        assert err.reason == MODEL_INVALID and "neither" not in str(err)


def test_bytes_that_are_not_onnx(tmp_path):
    (tmp_path / "x.onnx").write_bytes(b"<html>not a model</html>" * 10)
    err = error(lambda: load_model(tmp_path / "x.onnx"))
    assert err.reason == MODEL_INVALID and "not an ONNX model" in str(err)


# ---- https ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_server_files(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(CA bundle, server certificate, key) for 127.0.0.1, made with the dev cluster's PKI helpers."""
    import ipaddress
    import sys

    from cryptography import x509

    sys.path.insert(0, str(ROOT / "hack"))
    import devcluster

    pki = tmp_path_factory.mktemp("pki")
    devcluster._create_ca(pki)
    devcluster.issue_cert(pki, "models", "127.0.0.1", [], server=True,
                          sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    return pki / "ca.crt", pki / "models.crt", pki / "models.key"


def test_https_fetch_checks_the_server_against_the_ca_bundle(policy, tls_server_files):
    ca, cert, key = tls_server_files
    trusting = dataclasses.replace(policy, ca_bundle=ca)
    with ModelServer({"/m.onnx": Route(DATA)}, tls=(cert, key)) as server:
        assert server.url("/m.onnx").startswith("https://127.0.0.1:")
        assert fetch(server.url("/m.onnx"), DIGEST, trusting).read_bytes() == DATA
        err = error(lambda: fetch(server.url("/m.onnx"), "cd" * 32, policy))  # the system CAs do not know it
    assert err.reason == FETCH_FAILED and "certificate" in str(err).lower()


def test_ca_bundle_travels_through_the_environment(tmp_path):
    policy = FetchPolicy(cache_dir=tmp_path, ca_bundle=tmp_path / "ca.pem")
    assert FetchPolicy.from_env({**policy.env(), "ELASTICDF_MODEL_CACHE": str(tmp_path)}).ca_bundle == policy.ca_bundle
