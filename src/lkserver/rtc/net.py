"""The media network: UDP sockets shared by every transport, and passive ICE-TCP.

One UDP socket (livekit's `rtc.udp_port`, 7882 in dev mode) carries every participant's media:
packets are demultiplexed by remote address, and an unknown address is admitted only by an
authenticated STUN check naming a transport's ufrag (RFC 8445 ICE-lite). Without `udp_port`,
each transport gets a socket from `port_range_start..port_range_end`. ICE over TCP
(RFC 6544, passive, `rtc.tcp_port` 7881) frames packets with a 2-byte length (RFC 4571).
"""

from __future__ import annotations

import asyncio
import errno
import socket
import struct
from typing import Any, Protocol

from aioice import stun

from ..logs import get_logger
from .ice import is_stun, local_ufrag_of, parse_binding_request
from .sdp import Candidate

log = get_logger("lkserver.rtc.net")

# a TCP peer that does not read its media stops getting it past this much queued data
TCP_WRITE_LIMIT = 1 << 20
MAX_TCP_FRAME = 1 << 16


class Endpoint(Protocol):
    """A WebRTC transport as the network sees it."""

    def on_binding(self, msg: stun.Message, addr: Any, path: "Path") -> bool: ...
    def on_packet(self, data: bytes, path: "Path") -> None: ...


class Path:
    """Where a transport's packets go: a UDP address on a mux socket, or a TCP connection."""

    __slots__ = ("send", "addr", "protocol", "mux")

    def __init__(self, send: Any, addr: Any, protocol: str, mux: Any) -> None:
        self.send = send
        self.addr = addr
        self.protocol = protocol
        self.mux = mux


class UdpMux(asyncio.DatagramProtocol):
    def __init__(self, network: "MediaNetwork") -> None:
        self.network = network
        self.transport: asyncio.DatagramTransport | None = None
        self.by_addr: dict[Any, tuple[Endpoint, Path]] = {}
        self.port = 0
        self.ip = ""  # the address advertised for this socket

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        entry = self.by_addr.get(addr)
        if entry is not None and not (data and data[0] < 2):
            entry[0].on_packet(data, entry[1])
            return
        if not is_stun(data):
            return
        msg = parse_binding_request(data)
        if msg is None:
            return
        endpoint = self.network.by_ufrag.get(local_ufrag_of(msg))
        if endpoint is None:
            return
        path = entry[1] if entry is not None and entry[0] is endpoint else self.path_for(addr)
        if endpoint.on_binding(msg, addr, path):
            self.by_addr[addr] = (endpoint, path)

    def path_for(self, addr: Any) -> Path:
        transport = self.transport
        assert transport is not None

        def send(data: bytes) -> None:
            transport.sendto(data, addr)

        return Path(send, addr, "udp", self)

    def forget(self, endpoint: Endpoint) -> None:
        for addr in [a for a, (e, _) in self.by_addr.items() if e is endpoint]:
            del self.by_addr[addr]

    def error_received(self, exc: Exception) -> None:  # ICMP errors on an unconnected socket
        pass

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpConnection(asyncio.Protocol):
    """One passive ICE-TCP connection: RFC 4571 frames, bound to a transport by its first check."""

    def __init__(self, network: "MediaNetwork") -> None:
        self.network = network
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.endpoint: Endpoint | None = None
        self.path: Path | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        addr = transport.get_extra_info("peername")
        tr = self.transport

        def send(data: bytes) -> None:
            if tr.is_closing() or tr.get_write_buffer_size() > TCP_WRITE_LIMIT:
                return
            tr.write(struct.pack("!H", len(data)) + data)

        self.path = Path(send, addr, "tcp", self)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while len(self.buffer) >= 2:
            size = (self.buffer[0] << 8) | self.buffer[1]
            if len(self.buffer) < 2 + size:
                if len(self.buffer) > 2 * MAX_TCP_FRAME:
                    self.close()
                return
            frame = bytes(self.buffer[2:2 + size])
            del self.buffer[:2 + size]
            self.frame_received(frame)

    def frame_received(self, frame: bytes) -> None:
        assert self.path is not None
        if frame and frame[0] < 2:
            msg = parse_binding_request(frame) if is_stun(frame) else None
            if msg is None:
                return
            endpoint = self.endpoint or self.network.by_ufrag.get(local_ufrag_of(msg))
            if endpoint is None:
                self.close()
                return
            if endpoint.on_binding(msg, self.path.addr, self.path):
                self.endpoint = endpoint
            return
        if self.endpoint is not None:
            self.endpoint.on_packet(frame, self.path)

    def forget(self, endpoint: Endpoint) -> None:
        if self.endpoint is endpoint:
            self.close()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.network.tcp_connections.discard(self)


def _parse_range(udp_port: Any) -> tuple[int, int] | None:
    if udp_port in (None, "", 0, "0"):
        return None
    if isinstance(udp_port, int):
        return udp_port, udp_port
    text = str(udp_port).strip()
    if "-" in text:
        a, b = text.split("-", 1)
        return int(a), int(b)
    return int(text), int(text)


class MediaNetwork:
    """Owns the media sockets and the registry of transports by ICE ufrag.

    UDP sockets are bound to each advertised IP rather than to 0.0.0.0: a reply from a wildcard
    socket leaves with whatever source address the kernel picks, and a STUN response from an
    address other than the one checked fails the client's check (RFC 8445 §7.2.5.2.1). An
    advertised IP that is not local (NAT 1:1) gets a wildcard socket on the same port.
    """

    def __init__(self, *, bind_host: str = "0.0.0.0", node_ips: list[str], udp_port: Any = 0,
                 port_range: tuple[int, int] = (50000, 60000), tcp_port: int = 0) -> None:
        self.bind_host = bind_host
        self.node_ips = node_ips
        self.udp_ports = _parse_range(udp_port)
        self.port_range = port_range
        self.tcp_port_config = tcp_port
        self.tcp_port = 0
        self.by_ufrag: dict[str, Endpoint] = {}
        self.shared_groups: list[list[UdpMux]] = []  # per shared port: one socket per advertised IP
        self.own_groups: dict[int, list[UdpMux]] = {}  # id(endpoint) -> its sockets (port range mode)
        self.tcp_server: asyncio.AbstractServer | None = None
        self.tcp_connections: set[TcpConnection] = set()
        self._next = 0

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.udp_ports is not None:
            start, end = self.udp_ports
            for port in range(start, end + 1):
                try:
                    self.shared_groups.append(await self._bind_group(port))
                except OSError as e:
                    raise OSError(e.errno, f"cannot listen on UDP port {port}: {e.strerror}") from None
        if self.tcp_port_config >= 0:
            def factory() -> TcpConnection:
                conn = TcpConnection(self)
                self.tcp_connections.add(conn)
                return conn

            try:
                self.tcp_server = await loop.create_server(factory, self.bind_host, self.tcp_port_config,
                                                           reuse_address=True)
            except OSError as e:
                raise OSError(e.errno, f"cannot listen on TCP {self.bind_host}:{self.tcp_port_config}: "
                                       f"{e.strerror}") from None
            self.tcp_port = self.tcp_server.sockets[0].getsockname()[1]
        log.info("media_network_started",
                 udp=",".join(str(g[0].port) for g in self.shared_groups)
                 or f"{self.port_range[0]}-{self.port_range[1]}",
                 tcp=self.tcp_port or "off", node_ips=",".join(self.node_ips))

    async def _bind_group(self, port: int) -> list[UdpMux]:
        """One socket per advertised IP, all on `port`."""
        loop = asyncio.get_running_loop()
        group: list[UdpMux] = []
        wildcard: UdpMux | None = None
        try:
            for ip in self.node_ips:
                try:
                    sock = _udp_socket(ip, port)
                except OSError as e:
                    if e.errno != errno.EADDRNOTAVAIL:
                        raise
                    if wildcard is None:  # not a local address: receive on every interface
                        _, wildcard = await loop.create_datagram_endpoint(
                            lambda: UdpMux(self), sock=_udp_socket(self.bind_host, port))
                    group.append(_Advertised(wildcard, ip))  # type: ignore[arg-type]
                    continue
                _, mux = await loop.create_datagram_endpoint(lambda: UdpMux(self), sock=sock)
                mux.ip = ip
                group.append(mux)
        except OSError:
            for mux in group:
                mux.close()
            raise
        return group

    async def stop(self) -> None:
        for group in self.shared_groups + list(self.own_groups.values()):
            for mux in group:
                mux.close()
        self.shared_groups.clear()
        self.own_groups.clear()
        for conn in list(self.tcp_connections):
            conn.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
            self.tcp_server = None

    async def register(self, endpoint: Endpoint, ufrag: str) -> list[UdpMux]:
        """Admit checks for `ufrag`; returns the UDP sockets the endpoint's candidates name."""
        self.by_ufrag[ufrag] = endpoint
        if self.shared_groups:
            group = self.shared_groups[self._next % len(self.shared_groups)]
            self._next += 1
            return group
        group = self.own_groups.get(id(endpoint))
        if group is None:
            group = await self._bind_from_range()
            self.own_groups[id(endpoint)] = group
        return group

    def rekey(self, endpoint: Endpoint, old_ufrag: str, new_ufrag: str) -> None:
        if self.by_ufrag.get(old_ufrag) is endpoint:
            del self.by_ufrag[old_ufrag]
        self.by_ufrag[new_ufrag] = endpoint

    def unregister(self, endpoint: Endpoint, ufrag: str) -> None:
        if self.by_ufrag.get(ufrag) is endpoint:
            del self.by_ufrag[ufrag]
        for group in self.shared_groups:
            for mux in group:
                mux.forget(endpoint)
        own = self.own_groups.pop(id(endpoint), None)
        for mux in own or []:
            mux.close()
        for conn in list(self.tcp_connections):
            conn.forget(endpoint)

    async def _bind_from_range(self) -> list[UdpMux]:
        start, end = self.port_range
        span = end - start + 1
        for i in range(span):
            port = start + (self._next + i) % span
            try:
                group = await self._bind_group(port)
            except OSError:
                continue
            self._next = (self._next + i + 1) % span
            return group
        raise OSError(f"no free UDP port in {start}-{end}")

    def candidates(self, group: list[UdpMux]) -> list[Candidate]:
        out = []
        for i, mux in enumerate(group):
            out.append(Candidate(f"{i + 1}", 1, "udp", 2130706431 - i, mux.ip, mux.port, "host"))
        if self.tcp_port:
            for i, ip in enumerate(self.node_ips):
                out.append(Candidate(f"{i + 101}", 1, "tcp", 1671430143 - i, ip, self.tcp_port, "host",
                                     tcptype="passive"))
        return out


class _Advertised:
    """A wildcard socket advertised under a (non-local, NAT-mapped) IP."""

    def __init__(self, mux: UdpMux, ip: str) -> None:
        self.mux = mux
        self.ip = ip

    @property
    def port(self) -> int:
        return self.mux.port

    def forget(self, endpoint: Endpoint) -> None:
        self.mux.forget(endpoint)

    def close(self) -> None:
        self.mux.close()


def _udp_socket(host: str, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
        try:
            sock.setsockopt(socket.SOL_SOCKET, opt, 4 * 1024 * 1024)
        except OSError:
            pass
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def local_ipv4_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (for host candidates)."""
    import ifaddr

    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
    return out
