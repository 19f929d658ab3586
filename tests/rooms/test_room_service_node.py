"""Every RoomService RPC through the official Node server SDK (npm `livekit-server-sdk`).

The Node SDK speaks JSON Twirp: camelCase fields, enum names, int64 as strings, omitted zero
values, `application/json;charset=UTF-8`; it reads errors only from an exact
`application/json` response. A mismatch in any of these shows up here.
"""

from __future__ import annotations

import json

from conftest import API_KEY, API_SECRET, run_node


def test_node_server_sdk_room_service(server):
    proc = run_node("room_service.mjs", server.url, API_KEY, API_SECRET, "node")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)

    created = r["createRoom"]
    assert created["ok"], created
    room = created["value"]
    assert room["sid"].startswith("RM_")
    assert (room["name"], room["emptyTimeout"], room["departureTimeout"], room["maxParticipants"],
            room["metadata"]) == ("node-room", 60, 7, 5, "m1")
    assert int(room["creationTime"]) > 1_700_000_000
    assert r["createRoomAgain"]["value"]["sid"] == room["sid"]
    assert r["createRoomAgain"]["value"]["metadata"] == "m1"

    assert {x["sid"] for x in r["listRooms"]["value"]} >= {room["sid"], r["createRoomB"]["value"]["sid"]}
    assert [x["sid"] for x in r["listRoomsNames"]["value"]] == [room["sid"]]
    assert r["updateRoomMetadata"]["value"]["metadata"] == "m2"
    assert r["listParticipants"] == {"ok": True, "value": []}

    def err(name: str) -> tuple:
        e = r[name]
        assert not e["ok"], e
        return e["status"], e["code"]

    assert err("getParticipant") == (404, "not_found")
    assert "participant does not exist" in r["getParticipant"]["message"]
    assert err("removeParticipant") == (404, "not_found")
    assert err("updateParticipant") == (404, "not_found")
    assert err("mutePublishedTrack") == (503, "unavailable")
    assert err("updateSubscriptions") == (503, "unavailable")
    assert r["sendData"]["ok"], r["sendData"]
    assert err("sendDataNoRoom") == (503, "unavailable")
    assert err("moveParticipant") == (503, "unavailable")
    assert err("forwardParticipant") == (400, "invalid_argument")
    assert err("performRpc") == (503, "unavailable")
    assert r["deleteRoom"]["ok"], r["deleteRoom"]
    assert err("deleteRoomAgain") == (404, "not_found")
    assert "requested room does not exist" in r["deleteRoomAgain"]["message"]
    assert r["deleteRoomB"]["ok"]
    # a wrong secret is refused by the auth layer before any handler (plain-text 401, as LiveKit)
    assert r["badKey"]["status"] == 401
