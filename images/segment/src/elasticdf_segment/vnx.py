"""VNx network layer bring-up (Xilinx xup_vitis_network_example): registers, socket table, ARP, link.

Offsets are the networklayer kernel's AXI-Lite map (NetLayers/template.xml; reference facts §5). Values follow
pynq's vnx_utils: addresses are the natural integer of the dotted quad, the MAC register holds the MAC as a
48-bit integer (low word at +0, high at +4), and the ARP table stores IP and MAC byte-swapped.
Everything here talks to a `Registers` object, so tests record the exact writes without a card.
"""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

MAC_ADDRESS = 0x0010
IP_ADDRESS = 0x0018
GATEWAY = 0x001C
IP_MASK = 0x0020
UDP_NUMBER_SOCKETS = 0x0810
UDP_THEIR_IP = 0x0820  # then theirPort, myPort, valid tables, each number_sockets x 8 bytes
ARP_DISCOVERY = 0x1010
ARP_VALID = 0x1100
ARP_IP = 0x1400
ARP_MAC = 0x1800
CMAC_STAT_RX_STATUS = 0x0204  # CMAC (PG203) STAT_RX_STATUS_REG; bit 0 = link up, bit 1 = aligned


class Registers(Protocol):
    def read(self, offset: int) -> int: ...

    def write(self, offset: int, value: int) -> None: ...


class VnxError(RuntimeError):
    pass


@dataclass(frozen=True)
class Socket:
    their_ip: str
    their_port: int
    my_port: int
    valid: bool = True


def ip_value(ip: str) -> int:
    return int(ipaddress.IPv4Address(ip))


def mac_value(mac: str) -> int:
    return int(mac.replace(":", "").replace("-", ""), 16)


def swap_bytes(value: int, width: int) -> int:
    return int.from_bytes(value.to_bytes(width, "big"), "little")


def socket_offsets(index: int, number_sockets: int) -> tuple[int, int, int, int]:
    """theirIP, theirPort, myPort, valid register of socket `index`."""
    base = UDP_THEIR_IP + 8 * index
    stride = 8 * number_sockets
    return base, base + stride, base + 2 * stride, base + 3 * stride


def program_networklayer(regs: Registers, ip: str, mac: str, sockets: list[Socket | None],
                         prefix: int = 24) -> None:
    """Own address, gateway (.1 of the subnet, as pynq does), mask, then the whole socket table."""
    own = ip_value(ip)
    mask = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    mac_int = mac_value(mac)
    regs.write(MAC_ADDRESS, mac_int & 0xFFFFFFFF)
    regs.write(MAC_ADDRESS + 4, mac_int >> 32)
    regs.write(IP_ADDRESS, own)
    regs.write(GATEWAY, (own & mask) + 1)
    regs.write(IP_MASK, mask)
    number = regs.read(UDP_NUMBER_SOCKETS)
    if len(sockets) > number:
        raise VnxError(f"the bitstream has {number} UDP sockets, the segment needs {len(sockets)}")
    for index in range(number):  # unused entries are invalidated so no stale peer stays routable
        sock = sockets[index] if index < len(sockets) else None
        their_ip, their_port, my_port, valid = socket_offsets(index, number)
        regs.write(their_ip, ip_value(sock.their_ip) if sock else 0)
        regs.write(their_port, sock.their_port if sock else 0)
        regs.write(my_port, sock.my_port if sock else 0)
        regs.write(valid, 1 if sock and sock.valid else 0)


def arp_discovery(regs: Registers) -> None:
    for value in (0, 1, 0):  # a rising then falling edge starts one discovery round
        regs.write(ARP_DISCOVERY, value)


def arp_entry(regs: Registers, index: int) -> tuple[str, str] | None:
    """(ip, mac) of ARP table entry `index` (= last octet of the IP), or None when not valid."""
    valid_word = regs.read(ARP_VALID + (index // 4) * 4)
    if not (valid_word >> ((index % 4) * 8)) & 1:
        return None
    ip = swap_bytes(regs.read(ARP_IP + 4 * index), 4)
    mac = swap_bytes((regs.read(ARP_MAC + 8 * index + 4) << 32) | regs.read(ARP_MAC + 8 * index), 6)
    return str(ipaddress.IPv4Address(ip)), ":".join(f"{b:02x}" for b in mac.to_bytes(6, "big"))


def resolve_peers(regs: Registers, peers: list[str], attempts: int = 10, wait: float = 0.1,
                  sleep: Callable[[float], None] = time.sleep) -> dict[str, str]:
    """Run ARP discovery until every peer IP has a valid entry; peer -> MAC. Raises naming the missing ones."""
    found: dict[str, str] = {}
    for _ in range(attempts):
        arp_discovery(regs)
        sleep(wait)
        for peer in peers:
            entry = arp_entry(regs, ip_value(peer) & 0xFF)
            if entry and entry[0] == peer:
                found[peer] = entry[1]
        if len(found) == len(peers):
            return found
    missing = sorted(set(peers) - set(found))
    raise VnxError(f"ARP: no answer from {', '.join(missing)} after {attempts} discovery rounds "
                   "(cable/switch port down, or the peer segment not programmed yet)")


def link_up(cmac: Registers) -> bool:
    cmac.read(CMAC_STAT_RX_STATUS)  # latched register: the first read returns stale state
    return bool(cmac.read(CMAC_STAT_RX_STATUS) & 1)
