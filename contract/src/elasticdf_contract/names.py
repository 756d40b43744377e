"""Labels, annotations, ports and derived object names (one place for the operator, images and dev tools).

Every name derived from an ElasticInference stays valid for every name the API server accepts for one (a DNS
subdomain of up to 253 characters, dots allowed): Service names and pod hostnames must be DNS-1035 labels
(63 characters, no dots), label values 63 characters. Short names are used as they are; longer ones, or
ones with dots, are cut and made unique again by a hash of the full name.
"""

from __future__ import annotations

import hashlib
import re

GROUP = "elasticdf.io"
VERSION = "v1alpha1"

# labels
LABEL_NAME = f"{GROUP}/name"  # the ElasticInference (label_value of its name)
LABEL_GROUP = f"{GROUP}/group"  # a card group's index
LABEL_INSTANCE = f"{GROUP}/instance"
LABEL_SEGMENT = f"{GROUP}/segment"
LABEL_CARD = f"{GROUP}/card"  # a card pod's position in its group
LABEL_ROLE = f"{GROUP}/role"
LABEL_GATEWAY = f"{GROUP}/gateway"  # gateway pods: not card pods (no group, no card)
LABEL_CARD_TYPES = f"{GROUP}/card-types"  # on nodes: card types joined by "."
LABEL_SWITCH = f"{GROUP}/switch"
LABEL_RUNTIME = f"{GROUP}/runtime"  # on nodes: "xrt" when the cards run bitstreams
LABEL_BUILD = f"{GROUP}/build"  # on builder Jobs and their pods: the build's tag (builds.build_tag)
LABEL_MANAGED = "app.kubernetes.io/managed-by"
MANAGER = "elasticdf-operator"

# annotations
ANNOTATION_OWNER = f"{GROUP}/owner"  # the ElasticInference's full name (labels may hold a hashed one)
ANNOTATION_CARDS = f"{GROUP}/cards"  # on nodes: the card list in order; on group ConfigMaps: held cards
ANNOTATION_CARD = f"{GROUP}/card"  # on card pods: "<node>/<index>"
ANNOTATION_FPS = f"{GROUP}/fps"
ANNOTATION_COST = f"{GROUP}/cost-per-hour"
ANNOTATION_IDLE_SINCE = f"{GROUP}/idle-since"  # on group ConfigMaps: every instance standby since (unix s)
ANNOTATION_OBSERVED_FPS = f"{GROUP}/observed-fps"
ANNOTATION_BUILD_ATTEMPT = f"{GROUP}/build-attempt"  # on builder Jobs: 0 for the first Job of a build, 1, ...
ANNOTATION_WIRING_DIGEST = f"{GROUP}/wiring-digest"  # on gateway pods: the wiring they should have mounted

# ports and paths
DATA_PORT = 7000  # emulation: TCP port of a card's first hosted segment (+k for the k-th); xrt: UDP port base
GATEWAY_PORT = 8000
GATEWAY_GRPC_PORT = 8001  # the Open Inference Protocol's gRPC port (images/gateway: --grpc-port)
HEALTH_PORT = 8080
WIRING_DIR = "/etc/elasticdf"
GATEWAY_WIRING_DIR = f"{WIRING_DIR}/gateway"

DNS_LABEL = 63
_HASH = 8
_INVALID = re.compile(r"[^a-z0-9-]")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:_HASH]


def dns_label(name: str, suffix: str = "") -> str:
    """`name` + `suffix` as a DNS-1035 label (Service names, pod hostnames, label values): unchanged when it
    already is one, else the name is cut, its dots dropped, and a hash of the full name keeps it unique."""
    whole = name + suffix
    if len(whole) <= DNS_LABEL and not _INVALID.search(whole) and whole[:1].isalpha():
        return whole
    room = DNS_LABEL - len(suffix) - _HASH - 1
    stem = _INVALID.sub("-", name.lower())[:room].strip("-") or "x"
    if not stem[0].isalpha():
        stem = "e" + stem[: room - 1]
    return f"{stem}-{_digest(name)}{suffix}"


def label_value(name: str) -> str:
    """The LABEL_NAME value of an ElasticInference (selectors and indexes use this, never the raw name)."""
    return dns_label(name)


def card_pod_name(owner: str, group: int, card: int) -> str:
    return dns_label(owner, f"-g{group}-c{card}")


def group_configmap_name(owner: str, group: int) -> str:
    return dns_label(owner, f"-g{group}")


def cards_service(owner: str) -> str:
    """Headless Service giving card pods their DNS names (<pod>.<service>.<namespace>.svc)."""
    return dns_label(owner, "-cards")


def gateway_name(owner: str) -> str:
    """The gateway Deployment and its Service (the last segments send there too)."""
    return dns_label(owner, "-gateway")


AUTOSCALE_HISTORY_KEY = "history.json"  # key of the autoscaler's ConfigMap


def autoscale_configmap_name(owner: str) -> str:
    """The autoscaler's recommendation history (survives an operator restart)."""
    return dns_label(owner, "-autoscale")


def gateway_configmap_name(owner: str) -> str:
    return dns_label(owner, "-gateway-wiring")


def card_wiring_key(card: int) -> str:
    """ConfigMap key (and file name in a card pod) of the wiring of a group's `card`-th card."""
    return f"card-{card}.json"


def gateway_wiring_key(instance: int, segment: int) -> str:
    """Gateway ConfigMap key of one active instance's segment (the gateway reads `*segment-*.json`)."""
    return f"instance-{instance}-segment-{segment}.json"


def build_job_name(digest: str, attempt: int) -> str:
    """The builder Job of a card build (one per digest and attempt, in the operator's namespace, shared by every
    resource that needs the build): the digest's hex part names it, so two namespaces find the same Job."""
    return dns_label(f"elasticdf-build-{digest.removeprefix('sha256:')}", f"-{attempt}")
