"""VNx bring-up against a recording fake of the register interface: exact offsets and values, and the socket
table a card hosting several segments gets (no card here: this is the layout the backend would program)."""

from __future__ import annotations

import pytest
from elasticdf_contract.wiring import CardWiring, Endpoint, SegmentWiring
from elasticdf_segment import vnx
from elasticdf_segment.backends import BackendError, bring_up, socket_table


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


def one(w: SegmentWiring) -> CardWiring:
    return CardWiring.of_segment(w)


def test_bring_up_middle_segment_programs_both_peers_and_resolves_them_by_arp():
    net = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    arp_table_with(net, "10.100.0.5", "02:ed:f0:64:00:05")
    arp_table_with(net, "10.100.0.1", "02:ed:f0:64:00:01")
    cmac = FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 3})
    peers = bring_up(one(wiring(1)), net, cmac, sleep=lambda s: None)
    assert peers == {"10.100.0.5": "02:ed:f0:64:00:05", "10.100.0.1": "02:ed:f0:64:00:01"}
    assert (0x0820, 0x0A640005) in net.writes and (0x0828, 0x0A640001) in net.writes  # 0: next, 1: previous
    assert [v for o, v in net.writes if o == vnx.ARP_DISCOVERY][:3] == [0, 1, 0]


def test_first_segment_has_no_upstream_socket():
    net = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    arp_table_with(net, "10.100.0.3", "02:ed:f0:64:00:03")
    bring_up(one(wiring(0)), net, FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 1}), sleep=lambda s: None)
    assert (0x09A0, 1) in net.writes and (0x09A8, 0) in net.writes


def test_link_down_and_missing_peer_are_clear_errors():
    net = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    with pytest.raises(BackendError, match="link of card alveo-0/1 is down"):
        bring_up(one(wiring(1)), net, FakeRegisters(), sleep=lambda s: None, link_timeout=1)
    with pytest.raises(vnx.VnxError, match="no answer from 10.100.0.1, 10.100.0.5"):
        bring_up(one(wiring(1)), net, FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 1}), sleep=lambda s: None)


def shared_card_pair() -> tuple[CardWiring, CardWiring]:
    """Two instances, each split over cards A (first half) and B (second half): each card hosts two segments
    on its one QSFP address, one UDP port per segment (what the operator writes for xrt)."""
    a = [Endpoint(kind="qsfp", ip="10.100.0.1", mac="02:ed:f0:64:00:01", port=7000 + k) for k in range(2)]
    b = [Endpoint(kind="qsfp", ip="10.100.0.3", mac="02:ed:f0:64:00:03", port=7000 + k) for k in range(2)]
    gateway = Endpoint(kind="gateway", host="net-gateway.default.svc", port=8000)

    def seg(instance, segment, listen, up, down, card):
        return SegmentWiring(instance_id=f"default/net-{instance}", instance=instance, segment=segment, segments=2,
                             mode="xrt", model="m", node=f"alveo-{card}", card=0, card_type="u280", slrs=[0],
                             layer_range=[0, 1], layers=["a", "b"], listen=listen, upstream=up, downstream=down)

    card_a = CardWiring(node="alveo-0", card=0, card_type="u280", mode="xrt", build="sha256:a",
                        segments=[seg(i, 0, a[i], gateway, b[i], 0) for i in range(2)])
    card_b = CardWiring(node="alveo-1", card=0, card_type="u280", mode="xrt", build="sha256:b",
                        segments=[seg(i, 1, b[i], a[i], gateway, 1) for i in range(2)])
    return card_a, card_b


def test_a_card_hosting_several_segments_gets_one_socket_pair_per_segment():
    card_a, card_b = shared_card_pair()
    assert socket_table(card_a) == [vnx.Socket("10.100.0.3", 7000, 7000), None,  # segment 0: sends to B:7000
                                    vnx.Socket("10.100.0.3", 7001, 7001), None]  # segment 1: sends to B:7001
    assert socket_table(card_b) == [None, vnx.Socket("10.100.0.1", 7000, 7000),  # receives from A:7000
                                    None, vnx.Socket("10.100.0.1", 7001, 7001)]
    # what one card sends on an entry is exactly what the other card's entry matches: (ip, their port, my port)
    for k in range(2):
        tx, rx = socket_table(card_a)[2 * k], socket_table(card_b)[2 * k + 1]
        assert (tx.their_ip, tx.their_port, tx.my_port) == ("10.100.0.3", rx.my_port, rx.their_port)


def test_several_segments_program_one_table_and_resolve_each_peer_once():
    card_a, _ = shared_card_pair()
    net = FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 16})
    arp_table_with(net, "10.100.0.3", "02:ed:f0:64:00:03")
    assert bring_up(card_a, net, FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 1}), sleep=lambda s: None) == \
        {"10.100.0.3": "02:ed:f0:64:00:03"}
    assert [v for o, v in net.writes if o == vnx.IP_ADDRESS] == [0x0A640001]  # the card's address, once
    table = {o: v for o, v in net.writes if vnx.UDP_THEIR_IP <= o < vnx.UDP_THEIR_IP + 4 * 8 * 16}
    rows = [tuple(table[o] for o in vnx.socket_offsets(k, 16)) for k in range(5)]
    assert rows == [(0x0A640003, 7000, 7000, 1), (0, 0, 0, 0), (0x0A640003, 7001, 7001, 1), (0, 0, 0, 0),
                    (0, 0, 0, 0)]


def test_more_segments_than_the_bitstream_has_sockets_is_refused():
    card_a, _ = shared_card_pair()
    with pytest.raises(vnx.VnxError, match="has 2 UDP sockets, the segment needs 4"):
        bring_up(card_a, FakeRegisters({vnx.UDP_NUMBER_SOCKETS: 2}), FakeRegisters({vnx.CMAC_STAT_RX_STATUS: 1}),
                 sleep=lambda s: None)


def test_hosted_segments_must_share_the_cards_qsfp_address():
    card_a, card_b = shared_card_pair()
    with pytest.raises(ValueError, match="one QSFP address"):
        CardWiring(**{**card_a.model_dump(), "segments": [card_a.segments[0], card_b.segments[1].model_copy(
            update={"node": "alveo-0", "listen": card_b.segments[1].listen.model_copy(update={"port": 7005})})]})


def test_xrt_without_pyxrt_says_so():
    from elasticdf_segment.backends import XrtCard, choose

    with pytest.raises(BackendError, match="needs pyxrt"):
        XrtCard(one(wiring(1))).start()
    assert choose("auto") == "emulation"
