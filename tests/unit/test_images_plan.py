"""hack/images.py's plan (mirror, base recipe key, tags, archives) and images/pydeps.py, without building."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml
from elasticdf_operator.api import DEFAULT_GATEWAY_IMAGE, DEFAULT_SEGMENT_IMAGE

ROOT = Path(__file__).resolve().parents[2]


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(module)
    return module


images = load(ROOT / "hack" / "images.py")
pydeps = load(ROOT / "images" / "pydeps.py")

DEB822 = """\
Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Types: deb
# a comment line inside the stanza
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main contrib
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
"""


def apt_dir(tmp_path: Path, sources: str = "", one_line: str = "") -> Path:
    (tmp_path / "sources.list.d").mkdir()
    if sources:
        (tmp_path / "sources.list.d" / "debian.sources").write_text(sources)
    if one_line:
        (tmp_path / "sources.list").write_text(one_line)
    return tmp_path


def test_mirror_from_deb822_skips_source_stanzas(tmp_path):
    assert images.debian_mirror(apt_dir(tmp_path, sources=DEB822)) == "http://mirror.example/debian"


def test_mirror_from_one_line_sources_with_options(tmp_path):
    listing = "deb http://sec.example/debian-security bookworm-security main\n" \
              "deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian bookworm main # the main archive\n"
    assert images.debian_mirror(apt_dir(tmp_path, one_line=listing)) == "http://one.example/debian"


def test_no_mirror_for_the_suite_names_the_folder(tmp_path):
    with pytest.raises(SystemExit, match="bookworm main"):
        images.debian_mirror(apt_dir(tmp_path, one_line="deb http://x.example/debian trixie main\n"))


def test_base_tag_is_keyed_by_the_whole_recipe():
    recipe = images.base_recipe("http://mirror.example/debian")
    assert images.base_tag(recipe) == images.base_tag(images.base_recipe("http://mirror.example/debian"))
    assert images.base_tag(recipe) != images.base_tag({**recipe, "packages": [*recipe["packages"], "curl"]})
    assert images.base_tag(recipe) != images.base_tag(images.base_recipe("http://other.example/debian"))


def test_tags_are_the_names_the_operator_and_the_chart_use():
    assert images.image_tag("segment") == DEFAULT_SEGMENT_IMAGE
    assert images.image_tag("gateway") == DEFAULT_GATEWAY_IMAGE
    chart = ROOT / "charts" / "elastic-df"
    values = yaml.safe_load((chart / "values.yaml").read_text())
    app_version = yaml.safe_load((chart / "Chart.yaml").read_text())["appVersion"]
    for name in ("operator", "discovery", "gateway"):
        assert images.image_tag(name) == f"{values[name]['image']['repository']}:{app_version}"


def test_plan_lists_every_dockerfile_and_its_archive(tmp_path):
    plan = images.plan(images.NAMES, cache=tmp_path)
    assert plan["base"]["tag"].startswith("localhost/elasticdf/base:")
    for entry in plan["images"]:
        assert (ROOT / entry["dockerfile"]).is_file()
        assert entry["archive"] == str(tmp_path / f"{entry['name']}.tar")
    built = {p.parent.name for p in (ROOT / "images").glob("*/Dockerfile")}
    assert {e["name"] for e in plan["images"]} == built == set(images.SMOKE)


def copy_pyprojects(tmp_path: Path, *dists: str) -> Path:
    for dist in dists:
        (tmp_path / Path(dist).name).mkdir()
        (tmp_path / Path(dist).name / "pyproject.toml").write_text((ROOT / dist / "pyproject.toml").read_text())
    return tmp_path


def test_pydeps_lists_third_party_requirements_only(tmp_path):
    wanted = pydeps.third_party_requirements(copy_pyprojects(tmp_path, "contract", "partitioner", "images/segment"))
    names = [pydeps.requirement_name(r) for r in wanted]
    assert "onnxruntime" in names and "pydantic" in names
    assert not [n for n in names if n.startswith("elasticdf-")]
    assert len(wanted) == len(set(wanted))


def test_pydeps_refuses_a_local_requirement_whose_pyproject_is_missing(tmp_path):
    with pytest.raises(SystemExit, match="elasticdf-gateway needs elasticdf-segment"):
        pydeps.third_party_requirements(copy_pyprojects(tmp_path, "contract", "partitioner", "images/gateway"))
