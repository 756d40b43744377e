"""Card build artifacts in an OCI registry (docs/builds.md): push a builder's output directory, look a build up,
pull one by manifest digest into a directory, verified.

Layout (elasticdf_contract.builds): an ORAS-style artifact in BUILD_REPOSITORY, tagged build_tag(digest): the
empty config, one layer per file (media type by file name, the name in `org.opencontainers.image.title`), the
manifest's `artifactType` ARTIFACT_TYPE and annotations ANNOTATION_BUILD (the build digest) and ANNOTATION_CLOCK.

A pull trusts nothing the registry says: the manifest must hash to the digest asked for, every blob to its
layer's digest, the manifest's build annotation and the build.json inside must name the build the caller was
wired with, and every file name must be one an artifact may hold. Files are staged in a hidden directory and
moved into place only when all of them passed, so a refused artifact leaves nothing a card could use.

HTTP goes through artifacts.Registry (the model fetcher's client: timeouts, retries, size limit, basic and
bearer auth from a dockerconfigjson); blobs are uploaded as the OCI distribution spec describes, in one PUT
when small and in PATCHed chunks otherwise, and not at all when the registry already has them.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urljoin

import urllib3
from elasticdf_contract.builds import (
    ANNOTATION_BUILD,
    ANNOTATION_CLOCK,
    ANNOTATION_RESOURCES,
    ARTIFACT_TYPE,
    BUILD_REPOSITORY,
    MEDIA_RECORD,
    MEDIA_REPORT,
    MEDIA_SEGMENT_ONNX,
    MEDIA_XCLBIN,
    RECORD_FILE,
    REPORT_FILE,
    XCLBIN_FILE,
    BuildRecord,
    BuildReport,
    build_tag,
)
from pydantic import ValidationError

from .artifacts import (
    FETCH_FAILED,
    INVALID_SPEC,
    FetchPolicy,
    ModelError,
    OciReference,
    Registry,
    body_chunks,
    discard,
    retrying,
    small_body,
    write_verified,
)

BUILD_FIELD = "artifacts.build"  # the wiring field a card pod's build reference comes from
DIRECTORY_FIELD = "build directory"
PULL_SECRET_VALUE = "builds.pullSecret"
BUILD_REFUSED = "BuildArtifactRefused"  # an artifact that is not the build asked for (tampered or mislabelled)
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
EMPTY_MEDIA = "application/vnd.oci.empty.v1+json"
EMPTY_CONFIG = b"{}"
TITLE = "org.opencontainers.image.title"
UPLOAD_CHUNK = 16 << 20  # blobs up to this size go in one PUT, larger ones in PATCHes of this size
SEGMENT_FILE = re.compile(r"segment-(\d+)-(\d+)\.onnx")
ALLOWED_FILES = f"{RECORD_FILE}, {REPORT_FILE}, {XCLBIN_FILE}, segment-<first>-<last>.onnx"


def media_type(name: str) -> str | None:
    """The layer media type of artifact file `name`; None for a name an artifact may not hold."""
    fixed = {RECORD_FILE: MEDIA_RECORD, REPORT_FILE: MEDIA_REPORT, XCLBIN_FILE: MEDIA_XCLBIN}
    if name in fixed:
        return fixed[name]
    return MEDIA_SEGMENT_ONNX if SEGMENT_FILE.fullmatch(name) else None


@dataclass(frozen=True)
class ArtifactFile:
    path: Path
    media_type: str
    digest: str  # hex sha256
    size: int

    def descriptor(self) -> dict:
        return {"mediaType": self.media_type, "digest": f"sha256:{self.digest}", "size": self.size,
                "annotations": {TITLE: self.path.name}}


def artifact_files(directory: Path) -> list[ArtifactFile]:
    """The files of a builder's output directory, hashed; anything else in it is refused."""
    if not directory.is_dir():
        raise ModelError(INVALID_SPEC, DIRECTORY_FIELD, f"{directory} is not a directory")
    files = []
    for path in sorted(directory.iterdir()):
        media = media_type(path.name)
        if media is None or not path.is_file() or path.is_symlink():
            raise ModelError(INVALID_SPEC, DIRECTORY_FIELD, f"{path} cannot be part of a build artifact",
                             ALLOWED_FILES + " (regular files)")
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        files.append(ArtifactFile(path, media, digest, path.stat().st_size))
    names = {f.path.name for f in files}
    missing = [name for name in (RECORD_FILE, REPORT_FILE) if name not in names]
    if missing:
        raise ModelError(INVALID_SPEC, DIRECTORY_FIELD, f"{directory} has no {' or '.join(missing)}", ALLOWED_FILES)
    return files


def read_record(path: Path, field: str = DIRECTORY_FIELD) -> BuildRecord:
    try:
        return BuildRecord.model_validate_json(path.read_bytes())
    except ValidationError as err:
        raise ModelError(INVALID_SPEC, field, f"{path} is not a build record: {_first_error(err)}") from None


def read_report(path: Path) -> BuildReport:
    try:
        return BuildReport.model_validate_json(path.read_bytes())
    except ValidationError as err:
        raise ModelError(INVALID_SPEC, DIRECTORY_FIELD, f"{path} is not a build report: {_first_error(err)}") from None


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    return f"{'.'.join(str(p) for p in first['loc']) or '(document)'}: {first['msg']}"


def manifest_for(record: BuildRecord, report: BuildReport, files: list[ArtifactFile]) -> bytes:
    """The artifact's manifest (canonical JSON: the same directory always gives the same manifest digest)."""
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_MEDIA, "digest": f"sha256:{hashlib.sha256(EMPTY_CONFIG).hexdigest()}",
                   "size": len(EMPTY_CONFIG)},
        "layers": [f.descriptor() for f in files],
        "annotations": {ANNOTATION_BUILD: record.digest, ANNOTATION_CLOCK: f"{report.clock_mhz:g}",
                        ANNOTATION_RESOURCES: json.dumps(report.resources, sort_keys=True, separators=(",", ":"))},
    }
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def plain_http(policy: FetchPolicy, registry: str) -> FetchPolicy:
    """`policy` reaching `registry` over plain http (`--insecure`, chart value builds.insecure)."""
    return replace(policy, plain_http_registries=(*policy.plain_http_registries, registry))


def _registry(registry: str, digest: str, policy: FetchPolicy) -> Registry:
    ref = OciReference.parse(f"oci://{registry}/{BUILD_REPOSITORY}:{build_tag(digest)}", "--registry")
    return Registry(ref, policy, BUILD_FIELD, PULL_SECRET_VALUE)


# ---- push ----------------------------------------------------------------------------------------------------


def push_build(directory: Path, registry: str, policy: FetchPolicy, chunk: int = UPLOAD_CHUNK) -> str:
    """Push the artifact in `directory` (build.json, report.json, segment ONNX or card.xclbin) to
    `registry` (HOST:PORT), tagged build_tag(its build digest); returns the manifest digest "sha256:..."."""
    files = artifact_files(directory)
    record = read_record(directory / RECORD_FILE)
    report = read_report(directory / REPORT_FILE)
    if report.digest != record.digest:
        raise ModelError(INVALID_SPEC, DIRECTORY_FIELD, f"{REPORT_FILE} is of build {report.digest}, "
                         f"{RECORD_FILE} of {record.digest}")
    client = _registry(registry, record.digest, policy)
    empty = hashlib.sha256(EMPTY_CONFIG).hexdigest()
    upload_blob(client, empty, len(EMPTY_CONFIG), EMPTY_CONFIG, chunk)
    for f in files:
        upload_blob(client, f.digest, f.size, f.path, chunk)
    manifest = manifest_for(record, report, files)
    digest = hashlib.sha256(manifest).hexdigest()

    def put() -> None:
        response = client.request("PUT", f"{client.base}/manifests/{client.ref.reference}",
                                  {"Content-Type": OCI_MANIFEST}, lambda: manifest)
        _expect(response, 201, "PUT manifest", client)
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != f"sha256:{digest}":
            raise ModelError(FETCH_FAILED, BUILD_FIELD, f"registry {client.ref.registry} stored the manifest as "
                             f"{stored}, expected sha256:{digest}")

    retrying(f"{registry}: manifest of build {record.digest}", policy, put, BUILD_FIELD)
    return f"sha256:{digest}"


def upload_blob(client: Registry, digest: str, size: int, source: Path | bytes, chunk: int = UPLOAD_CHUNK) -> None:
    """Upload one blob (the file or bytes `source`) unless the registry has it: POST a session, then one PUT
    (size <= chunk) or PATCHes of `chunk` bytes and a closing PUT with the digest (OCI distribution spec,
    "pushing blobs")."""
    blob_url = f"{client.base}/blobs/sha256:{digest}"

    def attempt() -> None:
        head = client.request("HEAD", blob_url)
        discard(head)
        if head.status == 200:
            return
        location = _location(client.request("POST", f"{client.base}/blobs/uploads/"), client, "start an upload")
        if size <= chunk:
            data = source if isinstance(source, bytes) else source.read_bytes()
            put = client.request("PUT", _with_digest(location, digest),
                                 {"Content-Type": "application/octet-stream", "Content-Length": str(size)},
                                 lambda: data)
        else:
            location = _patch_chunks(client, location, source, chunk)
            put = client.request("PUT", _with_digest(location, digest), {"Content-Length": "0"})
        _expect(put, 201, f"upload of blob sha256:{digest[:12]}", client)

    retrying(f"{client.ref.registry}: blob sha256:{digest[:12]}", client.policy, attempt, BUILD_FIELD)


def _patch_chunks(client: Registry, location: str, source: Path | bytes, chunk: int) -> str:
    """PATCH the blob in chunks (Content-Range start-end, inclusive); returns the location to close it at."""
    with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as stream:
        start = 0
        while data := stream.read(chunk):
            end = start + len(data) - 1
            response = client.request("PATCH", location,
                                      {"Content-Type": "application/octet-stream", "Content-Length": str(len(data)),
                                       "Content-Range": f"{start}-{end}"}, lambda data=data: data)
            location = _location(response, client, f"upload bytes {start}-{end}")
            start = end + 1
    return location


def _location(response: urllib3.BaseHTTPResponse, client: Registry, what: str) -> str:
    _expect(response, 202, what, client)
    location = response.headers.get("Location")
    if not location:
        raise ModelError(FETCH_FAILED, BUILD_FIELD, f"registry {client.ref.registry}: {what}: no Location header")
    return urljoin(client.base, location)


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest=sha256:{digest}"


def _expect(response: urllib3.BaseHTTPResponse, status: int, what: str, client: Registry) -> None:
    """Read (and drop) the response; anything but `status` is an error naming the registry's own message."""
    body = small_body(response, what, client.policy)
    if response.status != status:
        raise ModelError(FETCH_FAILED, BUILD_FIELD, f"registry {client.ref.registry}: {what}: HTTP "
                         f"{response.status} {body[:300].decode(errors='replace')}".rstrip())


# ---- look up -------------------------------------------------------------------------------------------------


def build_exists(registry: str, digest: str, policy: FetchPolicy) -> str | None:
    """The manifest digest ("sha256:...") of build `digest` in `registry`, or None when it has none."""
    client = _registry(registry, digest, policy)

    def head() -> str | None:
        response = client.request("HEAD", f"{client.base}/manifests/{client.ref.reference}",
                                  {"Accept": OCI_MANIFEST})
        discard(response)
        if response.status == 404:
            return None
        if response.status != 200 or not response.headers.get("Docker-Content-Digest"):
            raise ModelError(FETCH_FAILED, BUILD_FIELD, f"registry {registry}: HEAD manifest of build {digest}: "
                             f"HTTP {response.status}")
        return response.headers["Docker-Content-Digest"]

    return retrying(f"{registry}: build {digest}", policy, head, BUILD_FIELD)


@dataclass(frozen=True)
class Reported:
    """What a build's report states, as its manifest carries it."""

    clock_mhz: float | None  # what a Vitis build reached, or the emulation builder's modelled clock
    resources: dict[str, float]  # REPORT_RESOURCES names -> used


def reported(uri: str, build_digest: str, policy: FetchPolicy) -> Reported:
    """The clock and resources the build's report states, from the verified manifest of the artifact at `uri`
    (its ANNOTATION_CLOCK and ANNOTATION_RESOURCES; None / {} where absent)."""
    client = Registry(OciReference.parse(uri, BUILD_FIELD), policy, BUILD_FIELD, PULL_SECRET_VALUE)
    annotations = _verified_manifest(client, uri, build_digest).get("annotations") or {}
    clock, resources = annotations.get(ANNOTATION_CLOCK), annotations.get(ANNOTATION_RESOURCES)
    try:
        parsed = {str(k): float(v) for k, v in json.loads(resources).items()} if resources else {}
    except (ValueError, TypeError, AttributeError):
        raise _refused(uri, f"its {ANNOTATION_RESOURCES} annotation {resources!r} is not a JSON map of numbers") \
            from None
    try:
        return Reported(float(clock) if clock else None, parsed)
    except ValueError:
        raise _refused(uri, f"its {ANNOTATION_CLOCK} annotation {clock!r} is not a number") from None


def build_reference(registry: str, manifest_digest: str) -> str:
    """The oci:// reference card pods are wired with (wiring artifacts.build)."""
    return f"oci://{registry}/{BUILD_REPOSITORY}@{manifest_digest}"


# ---- pull ----------------------------------------------------------------------------------------------------


def pull_build(uri: str, build_digest: str, directory: Path, policy: FetchPolicy) -> BuildRecord:
    """Pull the artifact at `uri` (oci://REGISTRY/REPO@sha256:MANIFEST) into `directory`, verified (module doc);
    returns its build record. A refused artifact raises ModelError and leaves no file in `directory`."""
    if not re.fullmatch(r"sha256:[0-9a-f]{32,64}", build_digest):
        raise ModelError(INVALID_SPEC, "build", f"{build_digest!r} is not a build digest", "sha256:<hex>")
    ref = OciReference.parse(uri, BUILD_FIELD)
    if not ref.reference.startswith("sha256:"):
        raise ModelError(INVALID_SPEC, BUILD_FIELD, f"{uri!r}: a build is pulled by manifest digest",
                         "oci://REGISTRY/REPOSITORY@sha256:HEX")
    client = Registry(ref, policy, BUILD_FIELD, PULL_SECRET_VALUE)
    manifest = _verified_manifest(client, uri, build_digest)
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=directory))
    try:
        for layer in manifest["layers"]:
            _pull_blob(client, layer, staging / layer["annotations"][TITLE], uri)
        record = read_record(staging / RECORD_FILE, BUILD_FIELD)
        if record.digest != build_digest:
            raise _refused(uri, f"its {RECORD_FILE} is of build {record.digest}, not {build_digest}")
        for path in staging.iterdir():
            os.replace(path, directory / path.name)
        return record
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refused(uri: str, why: str) -> ModelError:
    return ModelError(BUILD_REFUSED, BUILD_FIELD, f"{uri}: refused, {why}")


def _verified_manifest(client: Registry, uri: str, build_digest: str) -> dict:
    def get() -> bytes:
        response = client.get(f"{client.base}/manifests/{client.ref.reference}", OCI_MANIFEST)
        if response.status != 200:
            discard(response)
            raise ModelError(FETCH_FAILED, BUILD_FIELD, f"{uri}: manifest not found (HTTP {response.status})")
        return small_body(response, "manifest", client.policy)

    raw = retrying(f"{uri}: manifest", client.policy, get, BUILD_FIELD)
    got = hashlib.sha256(raw).hexdigest()
    if f"sha256:{got}" != client.ref.reference:
        raise _refused(uri, f"the registry served a manifest of digest sha256:{got}")
    try:
        manifest = json.loads(raw)
    except ValueError:
        raise _refused(uri, "the manifest is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("artifactType") != ARTIFACT_TYPE:
        raise _refused(uri, f"it is not a card build (artifactType must be {ARTIFACT_TYPE})")
    labelled = (manifest.get("annotations") or {}).get(ANNOTATION_BUILD)
    if labelled != build_digest:
        raise _refused(uri, f"it is labelled build {labelled} ({ANNOTATION_BUILD}), the card was wired with "
                       f"{build_digest}")
    _check_layers(manifest.get("layers"), uri, client.policy)
    return manifest


def _check_layers(layers: object, uri: str, policy: FetchPolicy) -> None:
    """Every layer: a file name an artifact may hold (no paths), its media type, a sha256 digest, a size within
    the limit, each name once."""
    if not isinstance(layers, list) or not layers:
        raise _refused(uri, "the manifest has no layers")
    names = set()
    for layer in layers:
        name = (layer.get("annotations") or {}).get(TITLE, "") if isinstance(layer, dict) else ""
        if media_type(name) is None or media_type(name) != layer.get("mediaType"):
            raise _refused(uri, f"layer {name!r} ({layer.get('mediaType') if isinstance(layer, dict) else layer}) is "
                           f"not an artifact file of its media type (allowed: {ALLOWED_FILES})")
        if name in names:
            raise _refused(uri, f"file {name} appears twice")
        names.add(name)
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", str(layer.get("digest"))):
            raise _refused(uri, f"layer {name} has no sha256 digest")
        if not isinstance(layer.get("size"), int) or layer["size"] > policy.max_bytes:
            raise _refused(uri, f"layer {name} has size {layer.get('size')!r}, the limit is {policy.max_bytes}")
    if RECORD_FILE not in names:
        raise _refused(uri, f"it has no {RECORD_FILE}")


def _pull_blob(client: Registry, layer: dict, target: Path, uri: str) -> None:
    digest = layer["digest"].removeprefix("sha256:")

    def attempt() -> Path:
        response = client.get(f"{client.base}/blobs/sha256:{digest}")
        if response.status != 200:
            discard(response)
            raise ModelError(FETCH_FAILED, BUILD_FIELD, f"{uri}: blob of {target.name} not found "
                             f"(HTTP {response.status})")
        return write_verified(body_chunks(response, uri, client.policy), digest, target, client.policy,
                              f"{uri} ({target.name})", BUILD_FIELD)

    try:
        retrying(f"{uri}: {target.name}", client.policy, attempt, BUILD_FIELD)
    except ModelError as err:
        if "digest mismatch" in err.problem:
            raise _refused(uri, f"{target.name}: {err.problem}") from None
        raise

