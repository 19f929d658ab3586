"""Egress records in the store: kept 24 h after they end, then swept (LiveKit redisstore.go)."""

from __future__ import annotations

import time

from livekit.protocol import egress as pe

from lkserver.config import EgressSettings
from lkserver.egress.manager import NS_EGRESS, EgressManager
from lkserver.events import EventBus
from lkserver.store import SQLiteKV, Store

S = pe.EgressStatus


async def test_ended_records_are_swept_after_a_day(tmp_path):
    store = Store(SQLiteKV(str(tmp_path / "db.sqlite")))
    now = time.time()
    old = pe.EgressInfo(egress_id="EG_old", status=S.EGRESS_COMPLETE, ended_at=int((now - 25 * 3600) * 1e9))
    recent = pe.EgressInfo(egress_id="EG_recent", status=S.EGRESS_FAILED, ended_at=int((now - 23 * 3600) * 1e9))
    running = pe.EgressInfo(egress_id="EG_running", status=S.EGRESS_ACTIVE, started_at=int((now - 30 * 3600) * 1e9))
    for info in (old, recent, running):
        await store.kv.put(NS_EGRESS, info.egress_id, info.SerializeToString())
    manager = EgressManager(EgressSettings(), str(tmp_path), rooms=None, store=store, events=EventBus(),  # type: ignore[arg-type]
                            rtc=None)  # type: ignore[arg-type]
    # load as start() does, without a room manager: a record ACTIVE before a restart has lost its worker
    for _, data in await store.kv.items(NS_EGRESS):
        info = pe.EgressInfo.FromString(data)
        manager.records[info.egress_id] = info
    await manager.sweep(now)
    assert sorted(manager.records) == ["EG_recent", "EG_running"]
    assert sorted(k for k, _ in await store.kv.items(NS_EGRESS)) == ["EG_recent", "EG_running"]
    assert [i.egress_id for i in manager.list(active=True)] == ["EG_running"]
    await store.close()
