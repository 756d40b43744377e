"""Card discovery against a fake PCI sysfs tree and the node patch the operator's inventory reads."""

from __future__ import annotations

import json

from elasticdf_discovery.cards import from_sysfs
from elasticdf_discovery.labels import node_patch


def fake_device(root, bdf, device, vendor="0x10ee", vbnv=None, macs=()):
    dev = root / bdf
    dev.mkdir(parents=True)
    (dev / "vendor").write_text(vendor + "\n")
    (dev / "device").write_text(device + "\n")
    if vbnv:
        (dev / "rom.u.0").mkdir()
        (dev / "rom.u.0" / "VBNV").write_text(vbnv)
    if macs:
        (dev / "xmc.u.0").mkdir()
        for i, mac in enumerate(macs):
            (dev / "xmc.u.0" / f"mac_addr{i}").write_text(mac)


def test_user_functions_only_in_pci_order(tmp_path):
    fake_device(tmp_path, "0000:3b:00.0", "0x500c")  # u280 management PF: not counted
    fake_device(tmp_path, "0000:3b:00.1", "0x500d", vbnv="xilinx_u280_gen3x16_xdma_base_1",
                macs=["00:0A:35:0B:00:01", "00:0a:35:0b:00:02"])
    fake_device(tmp_path, "0000:af:00.1", "0x5005")
    fake_device(tmp_path, "0000:d8:00.0", "0x1234", vendor="0x8086")
    cards = from_sysfs(tmp_path)
    assert [(c.bdf, c.type) for c in cards] == [("0000:3b:00.1", "u280"), ("0000:af:00.1", "u250")]
    assert cards[0].shell == "xilinx_u280_gen3x16_xdma_base_1"
    assert cards[0].macs == ("00:0a:35:0b:00:01", "00:0a:35:0b:00:02")


def test_node_patch_matches_the_inventory_format(tmp_path):
    for bdf, dev in [("0000:01:00.1", "0x500d"), ("0000:02:00.1", "0x5001"), ("0000:03:00.1", "0x500d")]:
        fake_device(tmp_path, bdf, dev)
    patch = node_patch(from_sysfs(tmp_path), xrt=False)
    labels, annotations = patch["metadata"]["labels"], patch["metadata"]["annotations"]
    assert labels == {"elasticdf.io/card-types": "u200.u280", "elasticdf.io/runtime": None}
    assert annotations["elasticdf.io/cards"] == "u280,u200,u280"
    assert json.loads(annotations["elasticdf.io/card-counts"]) == {"u200": 1, "u280": 2}
    assert annotations["elasticdf.io/shells"] is None


def test_no_cards_removes_our_keys(tmp_path):
    patch = node_patch(from_sysfs(tmp_path / "missing"), xrt=True)
    assert set(patch["metadata"]["labels"].values()) == {None}
    assert set(patch["metadata"]["annotations"].values()) == {None}
