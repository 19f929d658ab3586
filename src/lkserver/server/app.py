"""The server object: builds every part from a Config, starts and stops them in order.

No module-level state: `Server(config)` owns its store, event bus, domain, services, HTTP
application and metrics, so tests may run several in one process.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp import web
from livekit.protocol import agent_dispatch as proto_agent_dispatch
from livekit.protocol import models as proto_models
from livekit.protocol import room as proto_room
from livekit.protocol import sip as proto_sip

from ..config import Config, short_secrets
from ..events import EventBus
from ..logs import get_logger
from ..rooms import RoomManager
from ..services.room import RoomService
from ..store import Store, open_store
from ..twirp import TwirpRouter
from ..webhooks import WebhookDelivery, WebhookMetrics
from .http import HttpApp
from .metrics import Metrics

log = get_logger("lkserver.server")


class Server:
    def __init__(self, config: Config, store: Store | None = None) -> None:
        self.config = config
        self.store = store or open_store(config.data_dir, config.redis.address,
                                         username=config.redis.username,
                                         password=config.redis.password, db=config.redis.db,
                                         use_tls=config.redis.use_tls)
        self.events = EventBus()
        self.metrics = Metrics()
        # first subscriber: an event is in the webhook outbox before anything else reacts to it
        self.webhooks = WebhookDelivery(config.webhook, config.keys, self.store.outbox,
                                        metrics=WebhookMetrics(self.metrics.registry))
        self.events.subscribe(self.webhooks.handle)
        self.rooms = RoomManager(config.room, self.store, self.events)
        self.room_service = RoomService(self.rooms, config.limit, config.room)
        self.twirp = TwirpRouter()
        self.twirp.mount(proto_room.DESCRIPTOR.services_by_name["RoomService"], self.room_service)
        self.http = HttpApp(config.keys, self.twirp, self.metrics,
                            config.limit.max_api_request_body_size, health=lambda: True)
        from ..rtc.service import RtcService  # the media stack loads only with the server

        self.rtc = RtcService(config, self.rooms)
        for path, handler in self.rtc.routes().items():
            self.http.add_route(path, handler)
        self._wire_analytics_and_gateway(config)
        self._wire_sip_and_agents(config)
        self._wire_egress(config)
        self._wire_ingress(config)
        self.metrics.track_media(self.rtc.media_stats)
        self.metrics.track_rooms(lambda: len(self.rooms.rooms),
                                 lambda: sum(len(r.participants) for r in self.rooms.rooms.values()))
        self._runners: list[web.AppRunner] = []
        self.port = config.port
        self.metrics_port = config.prometheus.port
        self._stopped = asyncio.Event()

    def _wire_egress(self, config: Config) -> None:
        """Egress: jobs in worker processes fed from the SFU; CreateRoom's auto egress."""
        from livekit.protocol import egress as proto_egress

        from ..egress.manager import EgressManager
        from ..services.egress import EgressService

        self.egress = EgressManager(config.egress, config.data_dir, self.rooms, self.store, self.events, self.rtc)
        self.twirp.mount(proto_egress.DESCRIPTOR.services_by_name["Egress"], EgressService(self.egress))
        self.room_service.egress_launcher = self.egress

    def _wire_ingress(self, config: Config) -> None:
        """Ingress: the Ingress Twirp service, the RTMP listener (started in start()) and WHIP."""
        from livekit.protocol import ingress as proto_ingress

        from ..ingress import Ingress
        from ..services.ingress import IngressService

        self.ingress = Ingress(config, self.store, self.events, self.rtc)
        self.twirp.mount(proto_ingress.DESCRIPTOR.services_by_name["Ingress"], IngressService(self.ingress.manager))
        self.http.add_route(self.ingress.whip_path, self.ingress.whip.handle)
        self.http.add_prefix(self.ingress.whip_path + "/", self.ingress.whip.handle)

    def _wire_sip_and_agents(self, config: Config) -> None:
        """SIP (service + bridge) and agents (/agent workers, dispatches, their service)."""
        from .. import __version__
        from ..agents.dispatch import AgentDispatcher
        from ..agents.service import AgentService
        from ..services.agent_dispatch import AgentDispatchService
        from ..services.sip import SipService
        from ..sip.bridge import SipBridge

        def authenticate(request: web.Request) -> tuple[object, str]:
            claims, _, api_key = self.http.authenticate(request)
            return claims, api_key

        info = proto_models.ServerInfo(edition=proto_models.ServerInfo.Edition.Standard, version=__version__,
                                       protocol=16, node_id=f"lkserver-{__version__}")
        self.agents = AgentService(config.keys, authenticate, info)
        for path, handler in self.agents.routes().items():
            self.http.add_route(path, handler)
        self.dispatcher = AgentDispatcher(self.rooms, self.store, self.events, self.agents)
        self.agent_dispatch_service = AgentDispatchService(self.rooms, self.dispatcher, config.limit, config.room)
        self.twirp.mount(proto_agent_dispatch.DESCRIPTOR.services_by_name["AgentDispatchService"],
                         self.agent_dispatch_service)
        self.sip_bridge = SipBridge(config.sip, self.store, self.rooms, self.rtc, config.bind_hosts, config.rtc.node_ip)
        self.sip_service = SipService(self.store, self.sip_bridge)
        self.sip_service.participant_attributes = self._participant_attributes  # type: ignore[method-assign]
        self.twirp.mount(proto_sip.DESCRIPTOR.services_by_name["SIP"], self.sip_service)

    def _participant_attributes(self, room: str, identity: str) -> dict[str, str] | None:
        p = self.rooms.get_participant(room, identity)
        return dict(p.info.attributes) if p is not None else None

    def _wire_analytics_and_gateway(self, config: Config) -> None:
        """Sessions analytics (recorder on the event stream, /api/project/), the tenant gateway
        (/livekit/) and the OpenAPI document of both (/openapi.json)."""
        from ..analytics import PREFIX as ANALYTICS_PREFIX
        from ..analytics import AnalyticsApi, SessionRecorder
        from ..gateway import PREFIX as GATEWAY_PREFIX
        from ..gateway import Gateway, handle_openapi
        from ..store.analytics import AnalyticsStore

        self.analytics = SessionRecorder(
            AnalyticsStore(self.store.kv), retention_days=config.analytics.retention_days,
            media=self.rtc.participant_stream_bytes,
            live_room_sids=lambda: [r.sid for r in self.rooms.rooms.values()])
        self.events.subscribe(self.analytics.handle)
        self.http.add_prefix(ANALYTICS_PREFIX, AnalyticsApi(
            config.project_id, self.analytics, lambda request: self.http.authenticate(request)[0],
            config.analytics.retention_days).handle)
        self.gateway = Gateway(config.gateway, self.room_service, config.keys, config.limit,
                               self.store.kv)
        self.http.add_prefix(GATEWAY_PREFIX, self.gateway.handle)
        self.http.add_route("/openapi.json", handle_openapi)

    async def start(self) -> None:
        for key in short_secrets(self.config):
            if not self.config.development:
                log.error("weak_api_secret", api_key=key, hint="secrets should be at least 32 characters")
        if self.config.ignored_keys:
            log.warning("config_keys_ignored", keys=",".join(self.config.ignored_keys))
        await self.webhooks.start()
        await self.rooms.start()
        await self.rtc.start()
        await self.egress.start()
        await self.analytics.start()
        await self.dispatcher.start()
        await self.sip_bridge.start()
        self.port = await self._listen(self.http.app, self.config.bind_hosts, self.config.port)
        await self.ingress.start(self.port)
        if self.config.prometheus.port:
            p = self.config.prometheus
            self.metrics_port = await self._listen(self.metrics.app(p.username, p.password),
                                                   self.config.bind_hosts, p.port)
        log.info("server_started", port=self.port, bind=",".join(self.config.bind_hosts),
                 data_dir=self.config.data_dir, dev=self.config.development,
                 metrics_port=self.metrics_port or "off")

    async def _listen(self, app: web.Application, hosts: list[str], port: int) -> int:
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=5.0)
        await runner.setup()
        self._runners.append(runner)
        bound = port
        for host in hosts:
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((host, bound))
            except OSError as e:
                sock.close()
                raise OSError(e.errno, f"cannot listen on {host}:{bound}: {e.strerror}") from None
            bound = sock.getsockname()[1]
            site = web.SockSite(runner, sock)
            await site.start()
        return bound

    async def stop(self) -> None:
        """Graceful stop: no new requests, in-flight ones finish, state is kept in the store."""
        log.info("server_stopping")
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        await self.sip_bridge.stop()
        await self.dispatcher.stop()
        await self.egress.stop()
        await self.ingress.stop()
        await self.rtc.stop()
        await self.rooms.stop()
        await self.analytics.stop()
        await self.webhooks.stop()
        await self.store.close()
        self._stopped.set()
        log.info("server_stopped")
