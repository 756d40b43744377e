"""Fetch a user's model by URI: one policy, shared by the operator (to plan) and the segment runtime (to run).

Schemes (`spec.model.artifacts.onnx`):
- `https://`, `http://`: `spec.model.artifacts.sha256` is required. The body streams into a temp file in the
  cache (size limit, per-read timeout, a deadline per attempt), is verified, then renamed to
  `<cache>/sha256/<hex>.onnx`; a second fetch of the same digest does no network I/O.
- `oci://REGISTRY/REPO:TAG` or `oci://REGISTRY/REPO@sha256:HEX`: an OCI artifact in ORAS layout, pulled with
  the registry v2 HTTP API (manifest, then the ONNX layer's blob), basic or bearer auth from a
  dockerconfigjson. The manifest must hold exactly one layer of a media type in ONNX_MEDIA_TYPES. The layer's
  digest keys the cache (and is checked against `sha256` when the spec gives one).
- `file:///PATH`: only below the configured file root (`..` and symlinks that leave it are refused).
- `pvc://CLAIM/PATH`: the claim is mounted read-only at `<pvc root>/CLAIM` (segment pods: always; the operator:
  the claims the chart mounts); read there with the same containment rule as file://.

Transient failures (connection refused or reset, timeouts, HTTP 5xx/429, a body cut short) are retried with
bounded exponential backoff; everything has a timeout. Every failure is a ModelError whose `reason` is the
condition reason the operator reports (ModelFetchFailed, ModelInvalid, InvalidSpec) and whose message names the
spec field and the problem.

Why urllib3 and not the `oras` package: the pull of one artifact is two GETs (manifest, blob) plus the token
dance, and it must share the size limit, timeouts, deadline, retries and digest check of the https path;
oras-py pulls through `requests` without a size limit or per-request timeouts and writes whole layers to a
directory, so wrapping it would mean re-checking everything after the fact (and a stalled registry could hang
it). urllib3 (already in every image through the kubernetes client) gives pooled connections, timeouts and
streaming; the policy on top is this module. Card build artifacts (oci_builds) push and pull through the same
Registry client, retries and verified writes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlencode, urlsplit

import urllib3

from .errors import InputError

ONNX_FIELD = "spec.model.artifacts.onnx"
DIGEST_FIELD = "spec.model.artifacts.sha256"
SCHEMES = ("https", "http", "oci", "file", "pvc")
GiB = 1 << 30
DEFAULT_MAX_BYTES = 2 * GiB
# Condition reasons (the operator writes them to PartitionSolved).
FETCH_FAILED, MODEL_INVALID, INVALID_SPEC = "ModelFetchFailed", "ModelInvalid", "InvalidSpec"

# OCI layer media types taken for an ONNX model: the ONNX community's and IANA-style names, and ORAS' default
# for a file pushed without a type (`oras push reg/repo:tag model.onnx`: the raw file, titled *.onnx).
ONNX_MEDIA_TYPES = ("application/vnd.onnx.model", "application/vnd.onnx.model.v1", "application/onnx")
ORAS_DEFAULT_LAYER = "application/vnd.oci.image.layer.v1.tar"
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json", "application/vnd.docker.distribution.manifest.v2+json")
MAX_MANIFEST_BYTES = 4 << 20  # registries cap manifests at 4 MiB
TRANSIENT_STATUS = frozenset({429, 500, 502, 503, 504})
CHUNK = 1 << 20
T = TypeVar("T")


class ModelError(InputError):
    """A model that cannot be fetched or used. `reason`: the condition reason; `transient`: worth retrying."""

    def __init__(self, reason: str, field: str, problem: str, allowed: object | None = None,
                 transient: bool = False):
        super().__init__(field, problem, allowed)
        self.reason = reason
        self.transient = transient


@dataclass(frozen=True)
class FetchPolicy:
    """Where fetched models go and what a fetch may do. `from_env` reads the ELASTICDF_MODEL_* variables the
    chart sets on the operator and the operator sets on segment pods."""

    cache_dir: Path
    max_bytes: int = DEFAULT_MAX_BYTES
    file_root: Path | None = None
    pvc_root: Path | None = None
    docker_config: Path | None = None
    plain_http_registries: tuple[str, ...] = ()  # host[:port] reached over http (loopback always is)
    ca_bundle: Path | None = None  # PEM file of the CAs https servers are checked against (default: the system's)
    connect_timeout: float = 10.0
    read_timeout: float = 30.0  # per socket read: a stalled server fails here
    attempt_seconds: float = 900.0  # a whole attempt (a slow drip fails here, not never)
    retries: int = 3
    backoff: float = 0.5
    backoff_max: float = 10.0
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> FetchPolicy:
        env = os.environ if env is None else env

        def path(key: str) -> Path | None:
            return Path(env[key]) if env.get(key) else None

        registries = tuple(r for r in env.get("ELASTICDF_MODEL_PLAIN_HTTP_REGISTRIES", "").split(",") if r)
        return cls(cache_dir=path("ELASTICDF_MODEL_CACHE") or Path(tempfile.gettempdir()) / "elasticdf-models",
                   max_bytes=int(env.get("ELASTICDF_MODEL_MAX_BYTES") or DEFAULT_MAX_BYTES),
                   file_root=path("ELASTICDF_MODEL_FILE_ROOT"), pvc_root=path("ELASTICDF_MODEL_PVC_ROOT"),
                   docker_config=path("ELASTICDF_MODEL_DOCKER_CONFIG"), plain_http_registries=registries,
                   ca_bundle=path("ELASTICDF_MODEL_CA_BUNDLE"))

    def env(self) -> dict[str, str]:
        """The variables that make `from_env` return this policy (except cache and pvc root: per pod)."""
        out = {"ELASTICDF_MODEL_MAX_BYTES": str(self.max_bytes)}
        if self.file_root:
            out["ELASTICDF_MODEL_FILE_ROOT"] = str(self.file_root)
        if self.plain_http_registries:
            out["ELASTICDF_MODEL_PLAIN_HTTP_REGISTRIES"] = ",".join(self.plain_http_registries)
        if self.ca_bundle:
            out["ELASTICDF_MODEL_CA_BUNDLE"] = str(self.ca_bundle)
        return out


def normalize_digest(sha256: str | None) -> str | None:
    """`sha256:HEX` or `HEX` -> lowercase HEX; None stays None."""
    if sha256 is None:
        return None
    hexdigest = sha256.removeprefix("sha256:").lower()
    if not re.fullmatch(r"[0-9a-f]{64}", hexdigest):
        raise ModelError(INVALID_SPEC, DIGEST_FIELD, f"{sha256!r} is not a sha256 digest", "sha256:<64 hex digits>")
    return hexdigest


def fetch(uri: str, sha256: str | None, policy: FetchPolicy) -> Path:
    """A local path of the model at `uri`, verified against `sha256` (required for http/https)."""
    scheme = urlsplit(uri).scheme.lower()
    if scheme not in SCHEMES:
        raise ModelError(INVALID_SPEC, ONNX_FIELD, f"scheme {scheme or '(none)'!r} not supported", ", ".join(SCHEMES))
    digest = normalize_digest(sha256)
    if scheme in ("http", "https"):
        if digest is None:
            raise ModelError(INVALID_SPEC, DIGEST_FIELD, f"required for {scheme}:// artifacts", "sha256:<64 hex>")
        return _cached(digest, policy) or _download(uri, digest, policy)
    if scheme == "oci":
        return _pull_oci(uri, digest, policy)
    return _local(uri, scheme, digest, policy)


# ---- cache ----------------------------------------------------------------------------------------------

def cache_path(digest: str, policy: FetchPolicy) -> Path:
    return policy.cache_dir / "sha256" / f"{digest}.onnx"


def _cached(digest: str, policy: FetchPolicy) -> Path | None:
    path = cache_path(digest, policy)
    return path if path.is_file() else None


def _store(chunks: Iterator[bytes], expected: str, policy: FetchPolicy, where: str) -> Path:
    """Stream `chunks` into the cache, verified (see write_verified)."""
    return write_verified(chunks, expected, cache_path(expected, policy), policy, where, DIGEST_FIELD)


def write_verified(chunks: Iterator[bytes], expected: str, target: Path, policy: FetchPolicy, where: str,
                   field: str) -> Path:
    """Stream `chunks` into a temp file beside `target`, check size and sha256 (hex `expected`), rename to
    `target`: a reader sees the whole verified file or none. A mismatch is a ModelError naming `field`."""
    target.parent.mkdir(parents=True, exist_ok=True)
    hasher, size = hashlib.sha256(), 0
    fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out:
            for chunk in chunks:
                size += len(chunk)
                if size > policy.max_bytes:
                    raise _too_large(where, f"more than {policy.max_bytes} bytes", policy)
                hasher.update(chunk)
                out.write(chunk)
        got = hasher.hexdigest()
        if got != expected:
            raise ModelError(FETCH_FAILED, field, f"digest mismatch: expected sha256:{expected}, "
                             f"got sha256:{got} ({size} bytes from {where})")
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _too_large(where: str, size: str, policy: FetchPolicy) -> ModelError:
    return ModelError(FETCH_FAILED, ONNX_FIELD, f"{where} is too large: {size}, the limit is {policy.max_bytes} "
                      "bytes (chart value modelFetch.maxBytes)")


# ---- http(s) --------------------------------------------------------------------------------------------

_POOLS: dict[tuple[float, float, Path | None], urllib3.PoolManager] = {}


def _pool(policy: FetchPolicy) -> urllib3.PoolManager:
    key = (policy.connect_timeout, policy.read_timeout, policy.ca_bundle)
    if key not in _POOLS:
        # retries are ours (they must also cover a body cut short); redirects are followed by urllib3
        tls = {"ca_certs": str(policy.ca_bundle)} if policy.ca_bundle else {}
        _POOLS[key] = urllib3.PoolManager(timeout=urllib3.Timeout(connect=key[0], read=key[1]),
                                          retries=urllib3.Retry(total=None, connect=0, read=0, status=0, other=0,
                                                                redirect=5, raise_on_status=False), **tls)
    return _POOLS[key]


class Transient(Exception):
    """A failure worth another attempt (the message says what happened)."""


def retrying(what: str, policy: FetchPolicy, attempt: Callable[[], T], field: str = ONNX_FIELD) -> T:
    """Run `attempt` up to 1 + retries times, sleeping backoff, 2·backoff, … (at most backoff_max) between;
    when all fail, a ModelError naming `field`."""
    for n in range(policy.retries + 1):
        try:
            return attempt()
        except Transient as err:
            if n == policy.retries:
                raise ModelError(FETCH_FAILED, field, f"{what}: {err} (gave up after {n + 1} attempts)",
                                 transient=True) from None
            policy.sleep(min(policy.backoff * 2 ** n, policy.backoff_max))
    raise AssertionError("unreachable")


def _request(method: str, url: str, policy: FetchPolicy, headers: dict[str, str] | None = None,
             body: bytes | None = None) -> urllib3.BaseHTTPResponse:
    """One request with a streamed response body; connection failures and 5xx/429 become Transient."""
    try:
        response = _pool(policy).request(method, url, headers=headers or {}, body=body, preload_content=False)
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise Transient(_describe(err)) from None
    if response.status in TRANSIENT_STATUS:
        discard(response)
        raise Transient(f"HTTP {response.status}")
    return response


def discard(response: urllib3.BaseHTTPResponse) -> None:
    """Close the connection of a response whose body is not read to its end (a half-read connection must never
    go back to the pool: the next request on it would read this body's rest)."""
    response.close()
    response.release_conn()


def _describe(err: Exception) -> str:
    reason = getattr(err, "reason", None)
    text = str(reason or err)
    if "refused" in text.lower():  # before timeouts: urllib3's NewConnectionError is a ConnectTimeoutError
        return "connection refused"
    if isinstance(err, urllib3.exceptions.TimeoutError) or isinstance(reason, urllib3.exceptions.TimeoutError):
        return f"timed out ({text})"
    return text


def body_chunks(response: urllib3.BaseHTTPResponse, where: str, policy: FetchPolicy) -> Iterator[bytes]:
    """The response body in chunks; a body cut short, a stalled read or a too slow transfer is Transient."""
    declared = response.headers.get("Content-Length")
    if declared and declared.isdigit() and int(declared) > policy.max_bytes:
        discard(response)
        raise _too_large(where, f"{declared} bytes", policy)
    deadline = time.monotonic() + policy.attempt_seconds
    received, complete = 0, False
    try:
        for chunk in response.stream(CHUNK, decode_content=False):
            received += len(chunk)
            yield chunk
            if time.monotonic() > deadline:
                raise Transient(f"transfer took longer than {policy.attempt_seconds:.0f} s")
        complete = True
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise Transient(f"connection broke after {received} of {declared or '?'} bytes ({_describe(err)})") from None
    finally:
        if complete:
            response.release_conn()
        else:
            discard(response)


def _download(uri: str, digest: str, policy: FetchPolicy) -> Path:
    def attempt() -> Path:
        response = _request("GET", uri, policy)
        if response.status != 200:
            discard(response)
            raise ModelError(FETCH_FAILED, ONNX_FIELD, f"GET {uri}: HTTP {response.status}")
        return _store(body_chunks(response, uri, policy), digest, policy, uri)

    return retrying(f"GET {uri}", policy, attempt)


# ---- oci:// ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class OciReference:
    registry: str
    repository: str
    reference: str  # a tag or sha256:HEX

    @classmethod
    def parse(cls, uri: str, field: str = ONNX_FIELD) -> OciReference:
        """`uri` split; a malformed one is an InvalidSpec error naming `field`."""
        rest = uri[len("oci://"):] if uri.lower().startswith("oci://") else ""
        registry, _, path = rest.partition("/")
        if "@" in path:
            repository, _, reference = path.partition("@")
        else:
            repository, _, reference = path.rpartition(":") if ":" in path else (path, "", "latest")
        if not registry or not repository or not re.fullmatch(r"[a-z0-9]+([._/-][a-z0-9]+)*", repository) \
                or not re.fullmatch(r"sha256:[0-9a-f]{64}|[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}", reference):
            raise ModelError(INVALID_SPEC, field, f"{uri!r} is not an OCI reference",
                             "oci://REGISTRY/REPOSITORY:TAG or oci://REGISTRY/REPOSITORY@sha256:HEX")
        return cls(registry, repository, reference)

    def base(self, policy: FetchPolicy) -> str:
        host = self.registry.rsplit(":", 1)[0].strip("[]")
        plain = host in ("localhost", "::1") or host.startswith("127.") or self.registry in policy.plain_http_registries
        return f"{'http' if plain else 'https'}://{self.registry}/v2/{self.repository}"


class Registry:
    """Requests against one repository of a registry v2 API, answering 401 challenges (basic or bearer).
    `field` and `secret_value` name, in errors, the spec field the reference came from and the chart value that
    holds the pull secret."""

    def __init__(self, ref: OciReference, policy: FetchPolicy, field: str = ONNX_FIELD,
                 secret_value: str = "modelFetch.pullSecret"):
        self.ref, self.policy, self.field, self.secret_value = ref, policy, field, secret_value
        self.base = ref.base(policy)
        self.credentials = _credentials(ref.registry, policy)
        self.authorization: str | None = None
        self.answered: str | None = None  # the challenge `authorization` answers

    def get(self, url: str, accept: str | None = None) -> urllib3.BaseHTTPResponse:
        return self.request("GET", url, {"Accept": accept} if accept else {})

    def request(self, method: str, url: str, headers: dict[str, str] | None = None,
                body: Callable[[], bytes | None] = lambda: None) -> urllib3.BaseHTTPResponse:
        """`method url`, authorized (answering a 401 challenge once); `body()` gives the body of each send."""
        headers = headers or {}
        response = _request(method, url, self.policy, {**headers, **self._auth()}, body())
        challenge = response.headers.get("WWW-Authenticate", "")
        # a push needs a token of a wider scope than the pull before it: a new challenge gets a new answer
        if response.status == 401 and challenge != self.answered:
            discard(response)
            self.authorization, self.answered = self._answer(challenge), challenge
            response = _request(method, url, self.policy, {**headers, **self._auth()}, body())
        if response.status in (401, 403):
            discard(response)
            hint = "" if self.credentials else f" (no credentials for it: chart value {self.secret_value})"
            raise ModelError(FETCH_FAILED, self.field, f"registry {self.ref.registry} refused access to "
                             f"{self.ref.repository} (HTTP {response.status}){hint}")
        return response

    def _auth(self) -> dict[str, str]:
        return {"Authorization": self.authorization} if self.authorization else {}

    def _answer(self, challenge: str) -> str:
        scheme, _, params = challenge.partition(" ")
        if scheme.lower() == "basic":
            if not self.credentials:
                raise ModelError(FETCH_FAILED, self.field, f"registry {self.ref.registry} wants credentials; "
                                 f"none found (chart value {self.secret_value})")
            return "Basic " + base64.b64encode(f"{self.credentials[0]}:{self.credentials[1]}".encode()).decode()
        if scheme.lower() != "bearer":
            raise ModelError(FETCH_FAILED, self.field, f"registry {self.ref.registry}: unsupported auth {scheme!r}")
        fields = dict(re.findall(r'(\w+)="([^"]*)"', params))
        if "realm" not in fields:
            raise ModelError(FETCH_FAILED, self.field, f"registry {self.ref.registry}: bearer challenge has no realm")
        query = urlencode({k: v for k, v in fields.items() if k in ("service", "scope")}
                          or {"scope": f"repository:{self.ref.repository}:pull"})
        headers = {}
        if self.credentials:
            token = base64.b64encode(f"{self.credentials[0]}:{self.credentials[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        response = _request("GET", f"{fields['realm']}?{query}", self.policy, headers)
        body = small_body(response, "token", self.policy)
        try:
            answer = json.loads(body)
        except ValueError:
            answer = {}
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if response.status != 200 or not token:
            raise ModelError(FETCH_FAILED, self.field, f"registry {self.ref.registry}: token service answered "
                             f"HTTP {response.status} without a token")
        return f"Bearer {token}"


def _credentials(registry: str, policy: FetchPolicy) -> tuple[str, str] | None:
    """(user, password) for `registry` from the dockerconfigjson (`auths`), if any."""
    if policy.docker_config is None or not policy.docker_config.is_file():
        return None
    try:
        auths = json.loads(policy.docker_config.read_text()).get("auths") or {}
    except ValueError:
        raise ModelError(FETCH_FAILED, ONNX_FIELD, f"pull secret {policy.docker_config} is not a dockerconfigjson") \
            from None
    for key, entry in auths.items():
        host = re.sub(r"^https?://", "", key).split("/", 1)[0]
        if host != registry:
            continue
        if entry.get("username"):
            return entry["username"], entry.get("password", "")
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return user, password
    return None


def small_body(response: urllib3.BaseHTTPResponse, what: str, policy: FetchPolicy) -> bytes:
    try:
        data = response.read(MAX_MANIFEST_BYTES + 1, decode_content=True)
    except (urllib3.exceptions.HTTPError, OSError) as err:
        raise Transient(f"reading the {what}: {_describe(err)}") from None
    finally:
        discard(response)  # cheap: small bodies, and a fresh connection per manifest is fine
    if len(data) > MAX_MANIFEST_BYTES:
        raise ModelError(FETCH_FAILED, ONNX_FIELD, f"the {what} is larger than {MAX_MANIFEST_BYTES} bytes")
    return data


def onnx_layer(manifest: dict, uri: str) -> dict:
    """The one layer of an ORAS manifest that holds an ONNX model (see ONNX_MEDIA_TYPES)."""
    def is_onnx(layer: dict) -> bool:
        media = layer.get("mediaType", "").split(";")[0]
        title = (layer.get("annotations") or {}).get("org.opencontainers.image.title", "")
        return media in ONNX_MEDIA_TYPES or (media == ORAS_DEFAULT_LAYER and title.endswith(".onnx"))

    layers = [layer for layer in manifest.get("layers") or [] if is_onnx(layer)]
    if len(layers) != 1:
        found = [layer.get("mediaType") for layer in manifest.get("layers") or []]
        raise ModelError(MODEL_INVALID, ONNX_FIELD, f"{uri}: the artifact must have exactly one ONNX layer, it has "
                         f"layers {found}", f"media types {', '.join(ONNX_MEDIA_TYPES)}, or {ORAS_DEFAULT_LAYER} "
                         "titled *.onnx")
    return layers[0]


def _pull_oci(uri: str, digest: str | None, policy: FetchPolicy) -> Path:
    ref = OciReference.parse(uri)
    if digest and _cached(digest, policy):
        return cache_path(digest, policy)
    registry = Registry(ref, policy)

    def manifest() -> bytes:
        response = registry.get(f"{registry.base}/manifests/{ref.reference}", ", ".join(MANIFEST_TYPES))
        if response.status != 200:
            discard(response)
            raise ModelError(FETCH_FAILED, ONNX_FIELD, f"{uri}: manifest not found (HTTP {response.status})")
        return small_body(response, "manifest", policy)

    raw = retrying(f"{uri}: manifest", policy, manifest)
    if ref.reference.startswith("sha256:") and hashlib.sha256(raw).hexdigest() != ref.reference[7:]:
        raise ModelError(FETCH_FAILED, ONNX_FIELD, f"{uri}: the registry served a manifest of another digest")
    try:
        layer = onnx_layer(json.loads(raw), uri)
    except ValueError:
        raise ModelError(MODEL_INVALID, ONNX_FIELD, f"{uri}: the manifest is not JSON") from None
    layer_digest = normalize_digest(layer.get("digest", ""))
    if digest and layer_digest != digest:
        raise ModelError(FETCH_FAILED, DIGEST_FIELD,
                         f"digest mismatch: expected sha256:{digest}, the artifact's layer is sha256:{layer_digest}")
    if int(layer.get("size", 0)) > policy.max_bytes:
        raise _too_large(uri, f"{layer['size']} bytes", policy)
    if _cached(layer_digest, policy):
        return cache_path(layer_digest, policy)

    def blob() -> Path:
        response = registry.get(f"{registry.base}/blobs/sha256:{layer_digest}")
        if response.status != 200:
            discard(response)
            raise ModelError(FETCH_FAILED, ONNX_FIELD, f"{uri}: layer blob not found (HTTP {response.status})")
        return _store(body_chunks(response, uri, policy), layer_digest, policy, uri)

    return retrying(f"{uri}: layer sha256:{layer_digest[:12]}", policy, blob)


# ---- file:// and pvc:// -----------------------------------------------------------------------------------

def _local(uri: str, scheme: str, digest: str | None, policy: FetchPolicy) -> Path:
    parts = urlsplit(uri)
    if scheme == "file":
        if policy.file_root is None:
            raise ModelError(INVALID_SPEC, ONNX_FIELD, "file:// artifacts are disabled here (no file root: chart "
                             "value modelFetch.fileRoot)")
        root, wanted = policy.file_root, Path(unquote(parts.path))
        if parts.netloc not in ("", "localhost"):
            raise ModelError(INVALID_SPEC, ONNX_FIELD, f"{uri!r}: file:// takes no host", "file:///PATH")
    else:
        if not parts.netloc:
            raise ModelError(INVALID_SPEC, ONNX_FIELD, f"{uri!r} names no claim", "pvc://CLAIM/PATH")
        if policy.pvc_root is None or not (policy.pvc_root / parts.netloc).is_dir():
            raise ModelError(INVALID_SPEC, ONNX_FIELD, f"claim {parts.netloc!r} is not mounted here; the operator "
                             "reads only the claims of chart value modelFetch.pvcClaims")
        root = policy.pvc_root / parts.netloc
        wanted = root / unquote(parts.path).lstrip("/")
    path = _inside(root, wanted, uri)
    size = path.stat().st_size
    if size > policy.max_bytes:
        raise _too_large(uri, f"{size} bytes", policy)
    if digest is not None:
        got = _file_digest(path)
        if got != digest:
            raise ModelError(FETCH_FAILED, DIGEST_FIELD, f"digest mismatch: expected sha256:{digest}, got sha256:{got}")
    return path


def _inside(root: Path, wanted: Path, uri: str) -> Path:
    """`wanted` with every symlink resolved, if it is a file below `root` (else InvalidSpec/ModelFetchFailed)."""
    real_root = root.resolve()
    real = (real_root / wanted).resolve() if not wanted.is_absolute() else wanted.resolve()
    if not real.is_relative_to(real_root):
        raise ModelError(INVALID_SPEC, ONNX_FIELD, f"{uri!r} is outside the allowed root {real_root}")
    if not real.is_file():
        raise ModelError(FETCH_FAILED, ONNX_FIELD, f"{uri!r}: no such file")
    return real


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()
