"""Card build artifacts (elasticdf_partitioner.oci_builds, `elasticdf build push|pull`) against the real CNCF
distribution registry on 127.0.0.1: round trip, lookup, chunked upload, auth, and every way an artifact can be
not the build a card was wired with (a blob changed on the registry's disk, a wrong label, a wrong record)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from elasticdf_contract.builds import (
    ANNOTATION_BUILD,
    ANNOTATION_CLOCK,
    ANNOTATION_RESOURCES,
    ARTIFACT_TYPE,
    BUILD_REPOSITORY,
    MEDIA_SEGMENT_ONNX,
    BuildRecord,
    BuildReport,
    build_tag,
)
from elasticdf_partitioner.artifacts import FETCH_FAILED, INVALID_SPEC, FetchPolicy, ModelError, OciReference, Registry
from elasticdf_partitioner.cli import main
from elasticdf_partitioner.oci_builds import (
    BUILD_FIELD,
    BUILD_REFUSED,
    EMPTY_CONFIG,
    OCI_MANIFEST,
    Reported,
    artifact_files,
    build_exists,
    build_reference,
    manifest_for,
    pull_build,
    push_build,
    reported,
    upload_blob,
)
from test_artifacts import (  # noqa: F401 - pytest fixtures
    PASSWORD,
    USER,
    bearer_registry,
    docker_config,
    needs_registry,
    running_registry,
)

pytestmark = needs_registry
SEGMENT = bytes(range(256)) * 40  # 10 KiB: several chunks at chunk=4096


def record(model: str = "zoo:cnv-w1a1") -> BuildRecord:
    segments = [{"layers": [0, 5], "slrs": [0, 1], "floorplan": {"0": [0, 2], "1": [3, 5]}}]
    digest = BuildRecord.content_digest(model, "u280", 200.0, segments, {})
    return BuildRecord(digest=digest, model=model, card_type="u280", fclk_mhz=200.0, segments=segments)


def write_build(directory: Path, rec: BuildRecord, segment: bytes = SEGMENT) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "build.json").write_text(rec.model_dump_json(by_alias=True))
    report = BuildReport(digest=rec.digest, mode="emulation", clock_mhz=187.5, clock_source="modelled",
                         resources={"LUT": 1200.0, "DSP": 8.0}, files=["segment-0-5.onnx"], builder="test", seconds=0.5)
    (directory / "report.json").write_text(report.model_dump_json(by_alias=True))
    (directory / "segment-0-5.onnx").write_bytes(segment)
    return directory


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A registry with basic auth; yields (host:port, its storage directory)."""
    bcrypt = pytest.importorskip("bcrypt")
    state = tmp_path_factory.mktemp("build-registry")
    (state / "htpasswd").write_bytes(USER.encode() + b":" + bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(5)))
    with running_registry(state, {"htpasswd": {"realm": "elasticdf-test", "path": str(state / "htpasswd")}}) as r:
        yield r, state / "data"


@pytest.fixture
def policy(tmp_path, store, docker_config) -> FetchPolicy:  # noqa: F811 - the fixture imported above
    return FetchPolicy(cache_dir=tmp_path / "cache", docker_config=docker_config(store[0]), retries=0)


def refused(call) -> ModelError:
    with pytest.raises(ModelError) as info:
        call()
    return info.value


def test_push_then_exists_then_pull_round_trip(tmp_path, store, policy):
    registry, _ = store
    rec = record()
    out = write_build(tmp_path / "out", rec)
    assert build_exists(registry, rec.digest, policy) is None
    manifest = push_build(out, registry, policy)
    assert manifest.startswith("sha256:") and push_build(out, registry, policy) == manifest  # same dir, same digest
    assert build_exists(registry, rec.digest, policy) == manifest
    pulled = pull_build(build_reference(registry, manifest), rec.digest, tmp_path / "pulled", policy)
    assert pulled == rec
    assert sorted(p.name for p in (tmp_path / "pulled").iterdir()) == ["build.json", "report.json", "segment-0-5.onnx"]
    assert (tmp_path / "pulled" / "segment-0-5.onnx").read_bytes() == SEGMENT


def test_the_manifest_is_an_oras_artifact(tmp_path, store, policy):
    registry, _ = store
    rec = record("zoo:tfc-w1a1")
    out = write_build(tmp_path / "out", rec)
    push_build(out, registry, policy)
    client = Registry(OciReference.parse(f"oci://{registry}/{BUILD_REPOSITORY}:{build_tag(rec.digest)}"), policy)
    response = client.get(f"{client.base}/manifests/{build_tag(rec.digest)}", OCI_MANIFEST)
    manifest = json.loads(response.data)
    assert manifest["artifactType"] == ARTIFACT_TYPE
    assert manifest["config"]["mediaType"] == "application/vnd.oci.empty.v1+json"
    assert manifest["annotations"] == {ANNOTATION_BUILD: rec.digest, ANNOTATION_CLOCK: "187.5",
                                       ANNOTATION_RESOURCES: '{"DSP":8.0,"LUT":1200.0}'}
    titles = {layer["annotations"]["org.opencontainers.image.title"]: layer["mediaType"]
              for layer in manifest["layers"]}
    assert titles["segment-0-5.onnx"] == MEDIA_SEGMENT_ONNX and set(titles) == {"build.json", "report.json",
                                                                                 "segment-0-5.onnx"}


def test_large_blobs_are_uploaded_in_chunks(tmp_path, store, policy):
    registry, _ = store
    rec = record("zoo:chunked")
    big = hashlib.sha256(b"seed").digest() * 700  # 22,400 bytes: 6 PATCHes of 4096
    out = write_build(tmp_path / "out", rec, big)
    manifest = push_build(out, registry, policy, chunk=4096)
    pull_build(build_reference(registry, manifest), rec.digest, tmp_path / "pulled", policy)
    assert (tmp_path / "pulled" / "segment-0-5.onnx").read_bytes() == big


def _blob_on_disk(storage: Path, data: bytes) -> Path:
    hexdigest = hashlib.sha256(data).hexdigest()
    return storage / "docker/registry/v2/blobs/sha256" / hexdigest[:2] / hexdigest / "data"


def test_a_blob_changed_on_the_registry_disk_is_refused_and_nothing_is_written(tmp_path, store, policy):
    registry, storage = store
    rec = record("zoo:tampered")
    segment = b"weights-" * 500
    manifest = push_build(write_build(tmp_path / "out", rec, segment), registry, policy)
    blob = _blob_on_disk(storage, segment)
    blob.write_bytes(segment.replace(b"weights-", b"WEIGHTS-", 1))  # same size, one byte range differs
    target = tmp_path / "pulled"
    err = refused(lambda: pull_build(build_reference(registry, manifest), rec.digest, target, policy))
    assert err.reason == BUILD_REFUSED and str(err).startswith(BUILD_FIELD)
    assert "segment-0-5.onnx: digest mismatch" in str(err)
    assert list(target.iterdir()) == []  # not even the files that verified


def test_a_build_labelled_otherwise_is_refused(tmp_path, store, policy):
    registry, _ = store
    rec, other = record("zoo:labelled"), record("zoo:other")
    manifest = push_build(write_build(tmp_path / "out", rec), registry, policy)
    err = refused(lambda: pull_build(build_reference(registry, manifest), other.digest, tmp_path / "p", policy))
    assert err.reason == BUILD_REFUSED
    assert f"labelled build {rec.digest}" in str(err) and f"wired with {other.digest}" in str(err)


def test_a_label_that_lies_about_the_record_inside_is_refused(tmp_path, store, policy):
    """A manifest labelled with the wanted build whose build.json is another build's."""
    registry, _ = store
    wanted, inside = record("zoo:wanted"), record("zoo:inside")
    out = write_build(tmp_path / "out", inside)
    files = artifact_files(out)
    client = Registry(OciReference.parse(f"oci://{registry}/{BUILD_REPOSITORY}:liar"), policy)
    upload_blob(client, hashlib.sha256(EMPTY_CONFIG).hexdigest(), len(EMPTY_CONFIG), EMPTY_CONFIG)
    for f in files:
        upload_blob(client, f.digest, f.size, f.path)
    body = json.loads(manifest_for(inside, BuildReport.model_validate_json((out / "report.json").read_bytes()), files))
    body["annotations"][ANNOTATION_BUILD] = wanted.digest
    raw = json.dumps(body).encode()
    put = client.request("PUT", f"{client.base}/manifests/liar", {"Content-Type": OCI_MANIFEST}, lambda: raw)
    assert put.status == 201
    uri = build_reference(registry, f"sha256:{hashlib.sha256(raw).hexdigest()}")
    err = refused(lambda: pull_build(uri, wanted.digest, tmp_path / "p", policy))
    assert err.reason == BUILD_REFUSED and f"build.json is of build {inside.digest}" in str(err)


def test_pull_needs_a_manifest_digest_and_a_known_one(tmp_path, store, policy):
    registry, _ = store
    rec = record()
    by_tag = refused(lambda: pull_build(f"oci://{registry}/{BUILD_REPOSITORY}:{build_tag(rec.digest)}", rec.digest,
                                        tmp_path / "p", policy))
    assert by_tag.reason == INVALID_SPEC and "pulled by manifest digest" in str(by_tag)
    not_a_build = refused(lambda: pull_build(build_reference(registry, "sha256:" + "0" * 64), "latest",
                                             tmp_path / "p", policy))
    assert not_a_build.reason == INVALID_SPEC and "'latest' is not a build digest" in str(not_a_build)
    missing = refused(lambda: pull_build(build_reference(registry, "sha256:" + "0" * 64), rec.digest,
                                         tmp_path / "p", policy))
    assert missing.reason == FETCH_FAILED and "manifest not found (HTTP 404)" in str(missing)


def test_a_directory_with_other_files_is_not_pushed(tmp_path, store, policy):
    out = write_build(tmp_path / "out", record())
    (out / "notes.txt").write_text("hi")
    err = refused(lambda: push_build(out, store[0], policy))
    assert err.reason == INVALID_SPEC and "notes.txt cannot be part of a build artifact" in str(err)
    assert "segment-<first>-<last>.onnx" in str(err)


def test_credentials_are_required_and_checked(tmp_path, store, docker_config):  # noqa: F811
    registry, _ = store
    out = write_build(tmp_path / "out", record("zoo:auth"))
    anonymous = FetchPolicy(cache_dir=tmp_path, retries=0)
    err = refused(lambda: push_build(out, registry, anonymous))
    assert err.reason == FETCH_FAILED and "none found (chart value builds.pullSecret)" in str(err)
    wrong = FetchPolicy(cache_dir=tmp_path, docker_config=docker_config(registry, USER, "nope"), retries=0)
    err = refused(lambda: build_exists(registry, record().digest, wrong))
    assert f"registry {registry} refused access to {BUILD_REPOSITORY} (HTTP 401)" in str(err)


def test_bearer_tokens_are_widened_from_pull_to_push(tmp_path, bearer_registry, docker_config):  # noqa: F811
    registry, service, _ = bearer_registry
    rec = record("zoo:bearer")
    policy = FetchPolicy(cache_dir=tmp_path, docker_config=docker_config(registry), retries=0)
    manifest = push_build(write_build(tmp_path / "out", rec), registry, policy)
    assert build_exists(registry, rec.digest, policy) == manifest
    assert pull_build(build_reference(registry, manifest), rec.digest, tmp_path / "p", policy) == rec


def test_cli_push_prints_the_digest_and_pull_verifies(tmp_path, store, docker_config, capsys):  # noqa: F811
    registry, _ = store
    rec = record("zoo:cli")
    out = write_build(tmp_path / "out", rec)
    config = str(docker_config(registry))
    assert main(["build", "push", str(out), "--registry", registry, "--docker-config", config]) == 0
    manifest = capsys.readouterr().out.strip()
    assert manifest.startswith("sha256:") and len(manifest) == 71
    uri = build_reference(registry, manifest)
    assert main(["build", "pull", uri, "--build", rec.digest, "-o", str(tmp_path / "p"),
                 "--docker-config", config]) == 0
    assert (tmp_path / "p" / "segment-0-5.onnx").read_bytes() == SEGMENT
    assert main(["build", "pull", uri, "--build", record().digest, "-o", str(tmp_path / "q"),
                 "--docker-config", config]) == 2
    err = capsys.readouterr().err
    assert err.startswith("elasticdf build: artifacts.build: ") and "refused" in err and "Traceback" not in err


def test_the_operators_registry_lookups_use_the_builds_pull_secret(tmp_path, store, policy):
    """builds.pullSecret (mounted into the operator) authenticates its lookups, not modelFetch's credentials."""
    from elasticdf_operator.buildjobs import BuildSettings, lookup_policy

    registry, _ = store
    rec = record("zoo:cnv")
    manifest = push_build(write_build(tmp_path / "out", rec), registry, policy)
    model_fetch = FetchPolicy(cache_dir=tmp_path / "models", retries=0)  # modelFetch.pullSecret unset
    with_secret = BuildSettings(registry=registry, docker_config=str(policy.docker_config))
    assert build_exists(registry, rec.digest, lookup_policy(model_fetch, with_secret)) == manifest
    without = refused(lambda: build_exists(registry, rec.digest, lookup_policy(model_fetch,
                                                                               BuildSettings(registry=registry))))
    assert "wants credentials" in str(without) and "builds.pullSecret" in str(without)


def test_the_operator_reads_a_found_builds_report_into_its_status(tmp_path, store, policy):
    """The clock and resources a build's report states travel in its manifest (ANNOTATION_CLOCK,
    ANNOTATION_RESOURCES): the operator reads them once per found build and shows them in status.builds[]."""
    import datetime as dt

    from elasticdf_operator.api import BuildStatus
    from elasticdf_operator.buildjobs import BuildIndex, BuildSettings
    from elasticdf_operator.status import fill_build
    from test_operator_buildjobs import NoJobs

    registry, _ = store
    rec = record("zoo:cnv")
    manifest = push_build(write_build(tmp_path / "out", rec), registry, policy)
    assert reported(build_reference(registry, manifest), rec.digest, policy) == \
        Reported(187.5, {"LUT": 1200.0, "DSP": 8.0})
    settings = BuildSettings(registry=registry, docker_config=str(policy.docker_config))
    seen = BuildIndex().observe(NoJobs(), settings, {rec.digest}, policy)
    assert seen.manifests == {rec.digest: manifest} and seen.clocks == {rec.digest: 187.5}
    assert seen.resources == {rec.digest: {"LUT": 1200.0, "DSP": 8.0}}
    entry = BuildStatus(digest=rec.digest, card_type="u280", fclk_mhz=200.0, cards=1)
    fill_build(entry, seen, settings, dt.datetime.now(dt.UTC))
    assert (entry.phase, entry.reported_clock_mhz, entry.reported_resources) == \
        ("Ready", 187.5, {"LUT": 1200.0, "DSP": 8.0})
