"""Ingress: RTMP, WHIP and URL streams brought into rooms as an ingress participant's tracks.

`Ingress` is what the server builds: the records and sessions (`IngressManager`), the RTMP
listener and the WHIP endpoint. Module map: info.py (LiveKit's rules and presets), manager.py,
session.py (state machine), rtmp.py + amf0.py + flv.py (sans-I/O RTMP), rtmp_server.py,
whip.py, urlpull.py, transcode.py (PyAV worker threads), packetize.py / depacketize.py (RTP),
publish.py (the participant and its pacer).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from ..config import Config
from ..events import EventBus
from ..logs import get_logger
from ..store import Store
from ..store.ingress import IngressStore
from .manager import IngressManager

log = get_logger("lkserver.ingress")

DEFAULT_WHIP_PATH = "/w"


class Ingress:
    def __init__(self, config: Config, store: Store, events: EventBus, rtc: Any) -> None:
        from .rtmp_server import RtmpServer
        from .whip import WhipEndpoint

        self.config = config
        shared = bool(config.redis.address)
        self.manager = IngressManager(config.ingress, IngressStore(store.kv), events, rtc, shared_store=shared)
        self.rtmp = RtmpServer(self.manager)
        path = urlsplit(config.ingress.whip_base_url).path.rstrip("/") if config.ingress.whip_base_url else ""
        self.whip_path = path or DEFAULT_WHIP_PATH
        self.whip = WhipEndpoint(self.manager, rtc, self.whip_path)
        self.rtmp_port = 0

    async def start(self, http_port: int) -> None:
        settings = self.config.ingress
        await self.manager.start()
        if settings.rtmp_port >= 0:
            try:
                self.rtmp_port = await self.rtmp.start(self.config.bind_hosts, settings.rtmp_port)
            except OSError as e:
                if settings.rtmp_port_required:
                    raise
                log.warning("ingress_rtmp_unavailable", error=str(e),
                          hint="set ingress.rtmp_port (0 picks a free port)")
        host = self._public_host()
        if not self.manager.rtmp_base_url and self.rtmp_port:
            self.manager.rtmp_base_url = f"rtmp://{host}:{self.rtmp_port}/x"
        if not self.manager.whip_base_url:
            self.manager.whip_base_url = f"http://{host}:{http_port}{self.whip_path}"
        log.info("ingress_ready", rtmp_port=self.rtmp_port or "off", rtmp_url=self.manager.rtmp_base_url,
                 whip_url=self.manager.whip_base_url)

    def _public_host(self) -> str:
        if self.config.rtc.node_ip:
            return self.config.rtc.node_ip
        hosts = [h for h in self.config.bind_hosts if h not in ("0.0.0.0", "::")]
        return hosts[0] if hosts else "127.0.0.1"

    async def stop(self) -> None:
        await self.rtmp.stop()
        await self.whip.stop()
        await self.manager.stop()


__all__ = ["Ingress", "IngressManager"]
