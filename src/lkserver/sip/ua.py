"""The SIP user agent: asyncio UDP and TCP transports, transactions and dialogs (RFC 3261).

A thin I/O shell around sip/message.py. Server side: a request's retransmission is answered
with the last response (§17.2); a 2xx to INVITE is retransmitted until its ACK (§13.3.1.4).
Client side: requests are retransmitted over UDP (Timers A/E, T1 = 0.5 s) until a response,
and a transaction gives up after 64*T1 (Timers B/F). Dialogs carry the call's tags, CSeq and
remote target, for BYE and REFER. What a call means is up to the `on_invite` callback
(sip/bridge.py).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..logs import get_logger
from . import digest
from .message import (
    Address,
    Request,
    Response,
    SipMessage,
    SipParseError,
    SipURI,
    StreamFramer,
    header_params,
    new_branch,
    new_tag,
    parse,
    response_to,
)

log = get_logger("lkserver.sip")

T1, T2 = 0.5, 4.0
TRANSACTION_TIMEOUT = 64 * T1
MAX_SERVER_TRANSACTIONS = 4096  # remembered responses, oldest dropped first
USER_AGENT = "lkserver"
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REFER, NOTIFY, INFO"


@dataclass(frozen=True)
class Peer:
    """Where a message came from / goes to: address and transport ("udp" or "tcp")."""
    host: str
    port: int
    transport: str = "udp"


class CallFailed(Exception):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status} {reason}")
        self.status = status
        self.reason = reason


@dataclass
class Dialog:
    ua: UserAgent
    call_id: str
    local_tag: str
    remote_tag: str
    local_uri: str  # our From (outbound) / To (inbound) header value without tag
    remote_uri: str
    remote_target: str  # the far end's Contact URI
    peer: Peer
    local_cseq: int = 1
    on_bye: Callable[[], None] = lambda: None
    on_notify: Callable[[Request], None] = lambda req: None
    ended: bool = False

    def request(self, method: str, headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", content_type: str = "") -> Request:
        self.local_cseq += 1
        req = Request(method=method, uri=self.remote_target)
        req.add("Via", self.ua.via(self.peer))
        req.add("Max-Forwards", "70")
        req.add("From", f"{self.local_uri};tag={self.local_tag}")
        req.add("To", f"{self.remote_uri};tag={self.remote_tag}" if self.remote_tag else self.remote_uri)
        req.add("Call-ID", self.call_id)
        req.add("CSeq", f"{self.local_cseq} {method}")
        req.add("Contact", self.ua.contact(self.peer))
        req.add("User-Agent", USER_AGENT)
        for k, v in headers or []:
            req.add(k, v)
        if body:
            req.add("Content-Type", content_type)
            req.body = body
        return req

    async def bye(self) -> None:
        if self.ended:
            return
        self.ended = True
        self.ua.dialogs.pop(self.call_id, None)
        try:
            await self.ua.send_request(self.request("BYE"), self.peer, timeout=4.0)
        except (TimeoutError, OSError, CallFailed):
            pass

    async def refer(self, target: str, headers: list[tuple[str, str]] | None = None) -> Response:
        return await self.ua.send_request(self.request("REFER", [("Refer-To", target), ("Referred-By",
                                                                  f"<{self.local_uri.strip('<>')}>"),
                                                                 *(headers or [])]), self.peer)


class InboundInvite:
    """An INVITE being answered: provisional and final responses, the 2xx retransmitted until ACK."""

    def __init__(self, ua: UserAgent, req: Request, peer: Peer) -> None:
        self.ua = ua
        self.req = req
        self.peer = peer
        self.tag = new_tag()
        self.final_sent = False
        self.canceled = asyncio.Event()
        self.acked = asyncio.Event()
        self.dialog: Dialog | None = None

    def respond(self, status: int, reason: str = "", headers: list[tuple[str, str]] | None = None,
                body: bytes = b"", content_type: str = "") -> None:
        hdrs = list(headers or [])
        if body:
            hdrs.append(("Content-Type", content_type or "application/sdp"))
        if status >= 200:
            hdrs.append(("Contact", self.ua.contact(self.peer)))
            hdrs.append(("Allow", ALLOW))
        hdrs.append(("Server", USER_AGENT))
        resp = response_to(self.req, status, reason, to_tag=self.tag if status > 100 else "", headers=hdrs,
                           body=body)
        if status >= 200:
            self.final_sent = True
        self.ua.remember(self.req, resp)
        self.ua.send(resp, self.peer)
        if 200 <= status < 300:
            frm = Address.parse(self.req.get("From"))
            contact = self.req.get_all("Contact")
            target = Address.parse(contact[0]).uri if contact else frm.uri
            to = self.req.get("To").split(";tag=")[0]
            self.dialog = Dialog(self.ua, self.req.call_id, self.tag, frm.tag, to,
                                 self.req.get("From").split(";tag=")[0], target, self.peer,
                                 local_cseq=0)
            self.ua.dialogs[self.req.call_id] = self.dialog
            self.ua.spawn(self._retransmit_2xx(resp))

    async def _retransmit_2xx(self, resp: Response) -> None:
        if self.peer.transport != "udp":
            return
        interval = T1
        waited = 0.0
        while not self.acked.is_set() and waited < TRANSACTION_TIMEOUT:
            try:
                await asyncio.wait_for(self.acked.wait(), interval)
                return
            except TimeoutError:
                waited += interval
                interval = min(interval * 2, T2)
                self.ua.send(resp, self.peer)


@dataclass
class _ClientTransaction:
    responses: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=32))
    got_response: asyncio.Event = field(default_factory=asyncio.Event)


class UserAgent:
    def __init__(self, host: str, advertise: str, on_invite: Callable[[InboundInvite], Awaitable[None]]) -> None:
        self.host = host
        self.advertise = advertise
        self.on_invite = on_invite
        self.ports: dict[str, int] = {}
        self.udp: asyncio.DatagramTransport | None = None
        self.tcp_server: asyncio.AbstractServer | None = None
        self.tcp_conns: dict[tuple[str, int], tuple[asyncio.StreamWriter, asyncio.Task | None]] = {}
        self.dialogs: dict[str, Dialog] = {}
        self.invites: dict[str, InboundInvite] = {}  # branch -> pending inbound INVITE
        self._server_tx: dict[tuple[str, str], Response] = {}
        self._client_tx: dict[tuple[str, str], _ClientTransaction] = {}
        self._tasks: set[asyncio.Task] = set()

    # -- transports ------------------------------------------------------------------------------

    async def listen(self, port: int, tcp: bool = True) -> int:
        """Bind UDP (and TCP on the same port); port 0 picks a free one. Returns the port."""
        loop = asyncio.get_running_loop()
        ua = self

        class _Udp(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple) -> None:  # type: ignore[override]
                ua.received(data, Peer(addr[0], addr[1], "udp"))

        for _ in range(20):
            self.udp, _p = await loop.create_datagram_endpoint(_Udp, local_addr=(self.host, port))
            bound = self.udp.get_extra_info("sockname")[1]
            if not tcp:
                break
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((self.host, bound))
                self.tcp_server = await asyncio.start_server(self._serve_tcp, sock=sock)
                break
            except OSError:
                sock.close()
                self.udp.close()
                if port:
                    raise
        self.ports = {"udp": bound, "tcp": bound if self.tcp_server else 0}
        return bound

    async def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        if self.udp is not None:
            self.udp.close()
        if self.tcp_server is not None:
            self.tcp_server.close()
        for w, task in list(self.tcp_conns.values()):
            w.close()
            if task is not None:
                task.cancel()

    async def _serve_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        addr = writer.get_extra_info("peername")
        self.tcp_conns[(addr[0], addr[1])] = (writer, None)
        await self._read_tcp(reader, Peer(addr[0], addr[1], "tcp"))

    async def _read_tcp(self, reader: asyncio.StreamReader, peer: Peer) -> None:
        framer = StreamFramer()
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                for raw in framer.feed(data):
                    self.received(raw, peer)
        except (ConnectionError, SipParseError):
            pass
        finally:
            conn = self.tcp_conns.pop((peer.host, peer.port), None)
            if conn is not None:
                conn[0].close()

    async def _tcp_writer(self, peer: Peer) -> asyncio.StreamWriter:
        conn = self.tcp_conns.get((peer.host, peer.port))
        if conn is not None and not conn[0].is_closing():
            return conn[0]
        reader, writer = await asyncio.wait_for(asyncio.open_connection(peer.host, peer.port), 5.0)
        task = self.spawn(self._read_tcp(reader, peer))
        self.tcp_conns[(peer.host, peer.port)] = (writer, task)
        return writer

    def send(self, msg: SipMessage, peer: Peer) -> None:
        data = bytes(msg)
        if peer.transport == "tcp":
            conn = self.tcp_conns.get((peer.host, peer.port))
            if conn is not None and not conn[0].is_closing():
                conn[0].write(data)
            else:
                self.spawn(self._send_tcp(data, peer))
        elif self.udp is not None:
            self.udp.sendto(data, (peer.host, peer.port))

    async def _send_tcp(self, data: bytes, peer: Peer) -> None:
        try:
            (await self._tcp_writer(peer)).write(data)
        except (TimeoutError, OSError) as e:
            log.warning("sip_tcp_send_failed", host=peer.host, port=peer.port, error=str(e))

    def spawn(self, coro: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("sip_task_failed", error=repr(task.exception()))

    # -- addresses -------------------------------------------------------------------------------

    def via(self, peer: Peer) -> str:
        return f"SIP/2.0/{peer.transport.upper()} {self.advertise}:{self.ports.get(peer.transport) or self.ports['udp']};branch={new_branch()};rport"

    def contact(self, peer: Peer, user: str = "lkserver") -> str:
        port = self.ports.get(peer.transport) or self.ports["udp"]
        t = ";transport=tcp" if peer.transport == "tcp" else ""
        return f"<sip:{user}@{self.advertise}:{port}{t}>"

    # -- receiving -------------------------------------------------------------------------------

    def remember(self, req: Request, resp: Response) -> None:
        self._server_tx[(req.branch, req.method)] = resp
        while len(self._server_tx) > MAX_SERVER_TRANSACTIONS:
            self._server_tx.pop(next(iter(self._server_tx)))

    def received(self, data: bytes, peer: Peer) -> None:
        if not data.strip():
            return  # keep-alive
        try:
            msg = parse(data)
        except SipParseError as e:
            log.warning("sip_bad_message", host=peer.host, error=str(e))
            return
        if isinstance(msg, Response):
            _num, method = msg.cseq
            tx = self._client_tx.get((msg.branch, method))
            if tx is not None:
                tx.got_response.set()
                try:
                    tx.responses.put_nowait(msg)
                except asyncio.QueueFull:
                    pass
            return
        self._request(msg, self._reply_peer(msg, peer))

    @staticmethod
    def _reply_peer(req: Request, peer: Peer) -> Peer:
        """Responses go where the request came from (rport, RFC 3581) on its transport."""
        return peer

    def _request(self, req: Request, peer: Peer) -> None:
        if req.method == "ACK":
            inv = next((i for i in self.invites.values() if i.req.call_id == req.call_id), None)
            if inv is not None:
                inv.acked.set()
            return
        last = self._server_tx.get((req.branch, req.method))
        if last is not None:
            self.send(last, peer)  # a retransmission
            return
        if req.method == "INVITE":
            dialog = self.dialogs.get(req.call_id)
            if dialog is not None and "tag=" in req.get("To"):
                self._reinvite(req, peer, dialog)
                return
            inv = InboundInvite(self, req, peer)
            self.invites[req.branch] = inv
            self.send(response_to(req, 100), peer)
            self.spawn(self._run_invite(inv))
        elif req.method == "CANCEL":
            inv = self.invites.get(req.branch)
            self._reply(req, peer, 200 if inv is not None else 481)
            if inv is not None and not inv.final_sent:
                inv.canceled.set()
                inv.respond(487)
        elif req.method == "BYE":
            dialog = self.dialogs.pop(req.call_id, None)
            self._reply(req, peer, 200 if dialog is not None else 481)
            if dialog is not None and not dialog.ended:
                dialog.ended = True
                dialog.on_bye()
        elif req.method == "NOTIFY":
            self._reply(req, peer, 200)
            dialog = self.dialogs.get(req.call_id)
            if dialog is not None:
                dialog.on_notify(req)
        elif req.method in ("OPTIONS", "INFO"):
            self._reply(req, peer, 200, [("Allow", ALLOW)])
        else:
            self._reply(req, peer, 405, [("Allow", ALLOW)])

    def _reply(self, req: Request, peer: Peer, status: int,
               headers: list[tuple[str, str]] | None = None) -> None:
        resp = response_to(req, status, to_tag=new_tag() if "tag=" not in req.get("To") else "",
                           headers=headers)
        self.remember(req, resp)
        self.send(resp, peer)

    def _reinvite(self, req: Request, peer: Peer, dialog: Dialog) -> None:
        """A session refresh or hold: keep our media as it is."""
        body = getattr(dialog, "local_sdp", b"")
        resp = response_to(req, 200, headers=[("Contact", self.contact(peer)), ("Content-Type", "application/sdp")]
                           if body else [("Contact", self.contact(peer))], body=body)
        self.remember(req, resp)
        self.send(resp, peer)

    async def _run_invite(self, inv: InboundInvite) -> None:
        try:
            await self.on_invite(inv)
        except Exception:
            log.exception("sip_invite_failed", call_id=inv.req.call_id)
            if not inv.final_sent:
                inv.respond(500)
        finally:
            await asyncio.sleep(TRANSACTION_TIMEOUT if inv.peer.transport == "udp" else 1.0)
            self.invites.pop(inv.req.branch, None)

    # -- sending requests ----------------------------------------------------------------------

    async def send_request(self, req: Request, peer: Peer, timeout: float = TRANSACTION_TIMEOUT) -> Response:
        """A non-INVITE transaction: its final response (provisional ones skipped)."""
        key = (req.branch, req.method)
        tx = _ClientTransaction()
        self._client_tx[key] = tx
        try:
            self.send(req, peer)
            if peer.transport == "udp":
                self.spawn(self._retransmit(req, peer, tx, T2))
            async with asyncio.timeout(timeout):
                while True:
                    resp: Response = await tx.responses.get()
                    if resp.status >= 200:
                        return resp
        finally:
            self._client_tx.pop(key, None)

    async def _retransmit(self, req: Request, peer: Peer, tx: _ClientTransaction, cap: float) -> None:
        interval, waited = T1, 0.0
        while waited < TRANSACTION_TIMEOUT and (req.branch, req.method) in self._client_tx:
            try:
                await asyncio.wait_for(tx.got_response.wait(), interval)
                return
            except TimeoutError:
                waited += interval
                interval = min(interval * 2, cap)
                if (req.branch, req.method) in self._client_tx:
                    self.send(req, peer)

    async def invite(self, *, request_uri: str, from_addr: str, to_addr: str, peer: Peer, sdp: bytes,
                     username: str = "", password: str = "", ringing_timeout: float = 30.0,
                     extra_headers: list[tuple[str, str]] | None = None,
                     on_ringing: Callable[[], None] = lambda: None) -> tuple[Dialog, Response]:
        """Place a call: INVITE (answering one digest challenge), until answered, refused or
        the ringing timeout (then CANCEL). Returns the dialog and the 200 OK (its SDP)."""
        call_id = new_tag() + new_tag()
        tag = new_tag()
        cseq = 1
        auth: tuple[str, str] | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + ringing_timeout
        while True:
            req = Request(method="INVITE", uri=request_uri)
            req.add("Via", self.via(peer))
            req.add("Max-Forwards", "70")
            req.add("From", f"{from_addr};tag={tag}")
            req.add("To", to_addr)
            req.add("Call-ID", call_id)
            req.add("CSeq", f"{cseq} INVITE")
            req.add("Contact", self.contact(peer))
            req.add("User-Agent", USER_AGENT)
            req.add("Allow", ALLOW)
            for k, v in extra_headers or []:
                req.add(k, v)
            if auth is not None:
                req.add(auth[0], auth[1])
            req.add("Content-Type", "application/sdp")
            req.body = sdp
            key = (req.branch, "INVITE")
            tx = _ClientTransaction()
            self._client_tx[key] = tx
            self.send(req, peer)
            if peer.transport == "udp":
                self.spawn(self._retransmit(req, peer, tx, T2))
            try:
                resp = await self._invite_final(req, peer, tx, deadline, on_ringing)
            finally:
                self._client_tx.pop(key, None)
            if resp.status in (401, 407) and auth is None and username:
                self.send(self._ack_for(req, resp), peer)
                header = "WWW-Authenticate" if resp.status == 401 else "Proxy-Authenticate"
                value = digest.authorization(resp.get(header), "INVITE", request_uri, username, password)
                if value is None:
                    raise CallFailed(resp.status, resp.reason)
                auth = ("Authorization" if resp.status == 401 else "Proxy-Authorization", value)
                cseq += 1
                continue
            if resp.status >= 300:
                self.send(self._ack_for(req, resp), peer)
                raise CallFailed(resp.status, resp.reason)
            to = Address.parse(resp.get("To"))
            contacts = resp.get_all("Contact")
            target = Address.parse(contacts[0]).uri if contacts else request_uri
            dialog = Dialog(self, call_id, tag, from_addr, to_addr, to.tag, target, peer, local_cseq=cseq)
            self.dialogs[call_id] = dialog
            ack = dialog.request("ACK")
            ack.set("CSeq", f"{cseq} ACK")
            dialog.local_cseq = cseq
            self.send(ack, peer)
            return dialog, resp

    async def _invite_final(self, req: Request, peer: Peer, tx: _ClientTransaction, deadline: float,
                            on_ringing: Callable[[], None]) -> Response:
        loop = asyncio.get_running_loop()
        provisional = False
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                if provisional:
                    await self._cancel(req, peer)
                    try:  # the 487 that ends the INVITE transaction
                        async with asyncio.timeout(4.0):
                            while True:
                                r = await tx.responses.get()
                                if r.status >= 200:
                                    self.send(self._ack_for(req, r), peer)
                                    break
                    except TimeoutError:
                        pass
                raise CallFailed(408, "Request Timeout")
            try:
                resp: Response = await asyncio.wait_for(tx.responses.get(), remaining)
            except TimeoutError:
                continue
            if resp.status < 200:
                if resp.status > 100:
                    provisional = True
                    if resp.status in (180, 183):
                        on_ringing()
                else:
                    provisional = True
                continue
            return resp

    async def _cancel(self, invite: Request, peer: Peer) -> None:
        cancel = Request(method="CANCEL", uri=invite.uri)
        cancel.add("Via", invite.get_all("Via")[0])
        cancel.add("Max-Forwards", "70")
        for h in ("From", "To", "Call-ID"):
            cancel.add(h, invite.get(h))
        cancel.add("CSeq", f"{invite.cseq[0]} CANCEL")
        try:
            await self.send_request(cancel, peer, timeout=4.0)
        except TimeoutError:
            pass

    @staticmethod
    def _ack_for(invite: Request, resp: Response) -> Request:
        """The ACK of a non-2xx final response: same branch, the response's To (§17.1.1.3)."""
        ack = Request(method="ACK", uri=invite.uri)
        ack.add("Via", invite.get_all("Via")[0])
        ack.add("Max-Forwards", "70")
        ack.add("From", invite.get("From"))
        ack.add("To", resp.get("To"))
        ack.add("Call-ID", invite.call_id)
        ack.add("CSeq", f"{invite.cseq[0]} ACK")
        return ack


def peer_for_uri(uri: str, default_transport: str = "udp") -> Peer:
    u = SipURI.parse(uri)
    transport = u.params.get("transport", default_transport).lower()
    return Peer(u.host, u.port or 5060, "tcp" if transport == "tcp" else "udp")


__all__ = ["CallFailed", "Dialog", "InboundInvite", "Peer", "UserAgent", "header_params", "peer_for_uri"]
