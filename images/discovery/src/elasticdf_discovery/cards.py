"""Find Alveo cards: pyxrt enumeration when XRT is installed, else PCI sysfs (vendor 0x10ee).

Only the user-function (PF1) of each card is counted: the management function (PF0, xclmgmt) has its own
device id and would double the count. The partitioner catalog has no PCI ids, so the table lives here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

XILINX_VENDOR = "0x10ee"
# user PF device ids of the shells in the catalog (Alveo docs / XRT's device tables)
USER_PF_DEVICE_IDS = {"0x5001": "u200", "0x5005": "u250", "0x500d": "u280", "0x505d": "u55c"}
MGMT_PF_DEVICE_IDS = {"0x5000", "0x5004", "0x500c", "0x505c"}
SHELL_PATTERN = re.compile(r"xilinx_(u\d+c?)_")


@dataclass(frozen=True)
class Card:
    bdf: str  # PCI address, the stable order of cards on a node
    type: str
    shell: str = ""  # e.g. xilinx_u280_gen3x16_xdma_base_1 (empty when the driver does not say)
    macs: tuple[str, ...] = ()  # QSFP MACs from the card's management controller, when exposed


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def from_sysfs(root: Path | str = "/sys/bus/pci/devices") -> list[Card]:
    cards = []
    for dev in sorted(Path(root).iterdir()) if Path(root).is_dir() else []:
        if _read(dev / "vendor").lower() != XILINX_VENDOR:
            continue
        device = _read(dev / "device").lower()
        card_type = USER_PF_DEVICE_IDS.get(device)
        if card_type is None:
            continue  # management PF or a card we have no catalog entry for
        shell = next((_read(p) for p in sorted(dev.glob("rom*/VBNV")) if _read(p)), "")
        macs = tuple(m for p in sorted(dev.glob("xmc*/mac_addr*")) if (m := _read(p).lower()))
        cards.append(Card(dev.name, card_type, shell, macs))
    return cards


def from_pyxrt() -> list[Card] | None:
    """Cards XRT sees, or None when pyxrt is missing (then sysfs decides)."""
    try:
        import pyxrt
    except ImportError:
        return None
    cards, index = [], 0
    while True:
        try:
            device = pyxrt.device(index)
        except Exception:  # noqa: BLE001 - pyxrt raises RuntimeError past the last device
            break
        shell = str(device.get_info(pyxrt.xrt_info_device.name))
        bdf = str(device.get_info(pyxrt.xrt_info_device.bdf))
        match = SHELL_PATTERN.search(shell)
        if match:
            cards.append(Card(bdf, match.group(1), shell))
        index += 1
    return sorted(cards, key=lambda c: c.bdf)


def discover(sysfs: Path | str = "/sys/bus/pci/devices") -> tuple[list[Card], bool]:
    """(cards, found by XRT)."""
    cards = from_pyxrt()
    return (cards, True) if cards else (from_sysfs(sysfs), False)
