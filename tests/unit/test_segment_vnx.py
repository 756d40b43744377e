"""VNx bring-up against a recording fake of the register interface: exact offsets and values."""

from __future__ import annotations

import pytest
from elasticdf_contract.wiring import Endpoint, SegmentWiring
from elasticdf_segment import vnx
from elasticdf_segment.backends import BackendError, bring_up


class FakeRegisters:
    def __init__(self, values: dict[int, int] | None = None):
        self.values = dict(values or {})
        self.writes: list[tuple[int, int]] = []

    def read(self, offset: int) -> int:
        return self.values.get(offset, 0)

    def write(self, offset: int, value: int) -> None:
        self.writes.append((offset, value))
        self.values[offset] = value


def wiring(segment: int, segments: int = 3) -> SegmentWiring:
    qsfp = [Endpoint(kind="qsfp", ip=f"10.100.0.{1 + 2 * i}", mac=f"02:ed:f0:64:00:{1 + 2 * i:02x}", port=7000)
            for i in range(segments)]
    gateway = Endpoint(kind="gateway", host="net-gateway.default.svc", port=8000)
    return SegmentWiring(instance_id="default/net-0", instance=0, segment=segment, segments=segments, mode="xrt",
                         model="m", node="alveo-0", card=segment, card_type="u280", slrs=[0], layer_range=[0, 1],
                         layers=["a", "b"], listen=qsfp[segment],
                         upstream=qsfp[segment - 1] if segment else gateway,
                         downstream=qsfp[segment + 1] if segment + 1 < segments else gateway)


def test_program_networklayer_writes_the_reference_register_map():
    regs = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    vnx.program_networklayer(regs, "10.100.0.3", "02:ed:f0:64:00:03",
                             [vnx.Socket("10.100.0.5", 7000, 7000), vnx.Socket("10.100.0.1", 7000, 7000)])
    w = regs.writes
    assert w[:5] == [(0x0010, 0xF0640003), (0x0014, 0x02ED), (0x0018, 0x0A640003), (0x001C, 0x0A640001),
                     (0x0020, 0xFFFFFF00)]
    table = w[5:]
    assert len(table) == 16 * 4
    assert table[:4] == [(0x0820, 0x0A640005), (0x08A0, 7000), (0x0920, 7000), (0x09A0, 1)]
    assert table[4:8] == [(0x0828, 0x0A640001), (0x08A8, 7000), (0x0928, 7000), (0x09A8, 1)]
    assert table[-4:] == [(0x0898, 0), (0x0918, 0), (0x0998, 0), (0x0A18, 0)]  # socket 15 invalidated


def test_too_few_sockets_in_the_bitstream():
    with pytest.raises(vnx.VnxError, match="1 UDP sockets"):
        vnx.program_networklayer(FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 1}), "10.0.0.1", "00:00:00:00:00:01",
                                 [vnx.Socket("10.0.0.2", 1, 1), vnx.Socket("10.0.0.3", 1, 1)])


def arp_table_with(regs: FakeRegisters, ip: str, mac: str) -> None:
    index = vnx.ip_value(ip) & 0xFF
    regs.values[vnx.ARP_VALID + (index // 4) * 4] = 1 << ((index % 4) * 8)
    regs.values[vnx.ARP_IP + 4 * index] = vnx.swap_bytes(vnx.ip_value(ip), 4)
    swapped = vnx.swap_bytes(vnx.mac_value(mac), 6)
    regs.values[vnx.ARP_MAC + 8 * index] = swapped & 0xFFFFFFFF
    regs.values[vnx.ARP_MAC + 8 * index + 4] = swapped >> 32


def test_bring_up_middle_segment_programs_both_peers_and_resolves_them_by_arp():
    net = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    arp_table_with(net, "10.100.0.5", "02:ed:f0:64:00:05")
    arp_table_with(net, "10.100.0.1", "02:ed:f0:64:00:01")
    cmac = FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 3})
    peers = bring_up(wiring(1), net, cmac, sleep=lambda s: None)
    assert peers == {"10.100.0.5": "02:ed:f0:64:00:05", "10.100.0.1": "02:ed:f0:64:00:01"}
    assert (0x0820, 0x0A640005) in net.writes and (0x0828, 0x0A640001) in net.writes  # 0: next, 1: previous
    assert [v for o, v in net.writes if o == vnx.ARP_DISCOVERY][:3] == [0, 1, 0]


def test_first_segment_has_no_upstream_socket():
    net = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    arp_table_with(net, "10.100.0.3", "02:ed:f0:64:00:03")
    bring_up(wiring(0), net, FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 1}), sleep=lambda s: None)
    assert (0x09A0, 1) in net.writes and (0x09A8, 0) in net.writes


def test_link_down_and_missing_peer_are_clear_errors():
    net = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    with pytest.raises(BackendError, match="link of card 1 is down"):
        bring_up(wiring(1), net, FakeRegisters(), sleep=lambda s: None, link_timeout=1)
    with pytest.raises(vnx.VnxError, match="no answer from 10.100.0.1, 10.100.0.5"):
        bring_up(wiring(1), net, FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 1}), sleep=lambda s: None)


def test_xrt_without_pyxrt_says_so():
    from elasticdf_segment.backends import XrtBackend, choose

    with pytest.raises(BackendError, match="needs pyxrt"):
        XrtBackend(wiring(1)).start()
    assert choose("auto") == "emulation"
