"""`elasticdf build push|pull`: move a card build artifact to and from an OCI registry (oci_builds).

    elasticdf build push OUT --registry HOST:PORT [--insecure]        prints the manifest digest
    elasticdf build pull oci://HOST:PORT/elasticdf/builds@sha256:M --build sha256:B -o DIR

Credentials: the dockerconfigjson of --docker-config, else of $ELASTICDF_MODEL_DOCKER_CONFIG (the pull secret the
operator mounts), as for models. Loopback registries are reached over http; others over https unless --insecure.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

from rich.console import Console

from .artifacts import FetchPolicy
from .oci_builds import plain_http, pull_build, push_build


def _policy(args: argparse.Namespace, registry: str) -> FetchPolicy:
    policy = FetchPolicy.from_env()
    if args.docker_config:
        policy = replace(policy, docker_config=Path(args.docker_config))
    return plain_http(policy, registry) if args.insecure else policy


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--insecure", action="store_true", help="reach the registry over plain http")
    parser.add_argument("--docker-config", metavar="FILE",
                        help="dockerconfigjson with the registry's credentials (default: "
                             "$ELASTICDF_MODEL_DOCKER_CONFIG)")


def push_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("directory", metavar="OUT", help="a builder's output: build.json, report.json, "
                        "segment-<a>-<b>.onnx or card.xclbin")
    parser.add_argument("--registry", required=True, metavar="HOST:PORT")
    _common(parser)


def push_run(args: argparse.Namespace, console: Console) -> int:
    digest = push_build(Path(args.directory), args.registry, _policy(args, args.registry))
    print(digest)
    return 0


def pull_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("reference", metavar="oci://HOST:PORT/elasticdf/builds@sha256:M")
    parser.add_argument("--build", required=True, metavar="sha256:B", help="the build digest the artifact must be")
    parser.add_argument("-o", "--output", required=True, metavar="DIR", help="where the artifact's files go")
    _common(parser)


def pull_run(args: argparse.Namespace, console: Console) -> int:
    registry = args.reference.removeprefix("oci://").split("/", 1)[0]
    record = pull_build(args.reference, args.build, Path(args.output), _policy(args, registry))
    console.print(f"pulled build {record.digest} ({record.model}, {record.card_type}, "
                  f"{len(record.segments)} segment(s)) into {args.output}")
    return 0


SUBCOMMANDS = {
    "push": ("push a build artifact directory to an OCI registry; prints the manifest digest",
             push_arguments, push_run),
    "pull": ("pull a build artifact by manifest digest into a directory, verifying every blob and the build",
             pull_arguments, pull_run),
}
