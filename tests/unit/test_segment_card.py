"""The segment runtime reports the card the device plugin handed its container (env), in /metrics."""

from __future__ import annotations

from elasticdf_segment.observe import SegmentFamilies, card_from_env
from prometheus_client import generate_latest

PLUGIN_ENV = {"ELASTICDF_CARD_INDEX": "1", "ELASTICDF_CARD_BDF": "0000:82:00.1", "ELASTICDF_CARD_TYPE": "u280",
              "PATH": "/usr/bin"}


def test_card_from_env_reads_only_the_device_plugin_variables():
    assert card_from_env(PLUGIN_ENV) == {"index": "1", "bdf": "0000:82:00.1", "type": "u280"}
    assert card_from_env({"PATH": "/usr/bin", "ELASTICDF_CARD_BDF": ""}) == {}


def test_card_info_metric_labels_the_allocated_card():
    """One card pod, one card: the metric labels the card whatever segments the pod hosts."""
    text = generate_latest(SegmentFamilies(card=card_from_env(PLUGIN_ENV)).registry).decode()
    assert 'elasticdf_segment_card_info{card_bdf="0000:82:00.1",card_index="1",card_type="u280"} 1.0' in text
    without = generate_latest(SegmentFamilies().registry).decode()
    assert 'elasticdf_segment_card_info{card_bdf="",card_index="",card_type=""} 1.0' in without
