"""Real calls with Debian's sipp as the far end (reference media-services.md §3).

Inbound: sipp dials the server, answers its digest challenge, and the dispatch rule puts the
call in a room, where the official Python realtime SDK hears the call's tone and the call
(an RTP sink at the address sipp's SDP names) hears the SDK's tone. A wrong password is
refused with 403. Outbound: CreateSIPParticipant rings a sipp UAS through an outbound trunk
and the answered call is a participant of kind SIP until it is removed (BYE). A PIN rule
answers and admits the caller after sipp keys the digits (RFC 4733, sipp's own captures);
TransferSIPParticipant sends a REFER, follows the NOTIFY and hangs up.
"""

from __future__ import annotations

import asyncio

import livekit.api as lk
import pytest
from conftest import API_KEY, API_SECRET
from livekit.protocol import models, sip
from sipfix import (
    RtpSink,
    assert_tone,
    peak_hz,
    py_client,
    run_sipp,
    start_sip_server,
    token,
    uac_scenario,
    uas_scenario,
    write_ulaw_wav,
)


async def setup_inbound(api: lk.LiveKitAPI, room: str) -> None:
    await api.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(trunk=sip.SIPInboundTrunkInfo(
        name="pbx", numbers=["+15550100"], auth_username="pbx", auth_password="s3cret")))
    await api.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=sip.SIPDispatchRuleInfo(
        name="to-room", rule=sip.SIPDispatchRule(dispatch_rule_direct=sip.SIPDispatchRuleDirect(room_name=room)),
        attributes={"source": "pstn"})))


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_inbound_call_audio_both_ways(tmp_path, transport):
    server, sip_port = start_sip_server(tmp_path / "srv")
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    sink = await RtpSink.open()
    try:
        await setup_inbound(api, "phone-room")
        wav = tmp_path / "sipp" / "tone440.wav"
        wav.parent.mkdir(parents=True)
        write_ulaw_wav(wav, 440.0, 4.5)
        listener = asyncio.ensure_future(py_client(server, token("listener", "phone-room"), "--seconds", "7",
                                                   "--publish-audio", "660"))
        await asyncio.sleep(2.0)  # the listener is in the room and publishing
        scenario = uac_scenario("+15550001", sink.port, wav=str(wav), talk_ms=4500)
        sipp = asyncio.ensure_future(run_sipp(tmp_path / "sipp", scenario, f"127.0.0.1:{sip_port}", "-s", "+15550100",
                                              "-i", "127.0.0.1", "-au", "pbx", "-ap", "s3cret", "-mp", "0",
                                              "-t", "t1" if transport == "tcp" else "u1"))
        # while the call is up: the phone participant as ListParticipants shows it
        phone = None
        for _ in range(50):
            await asyncio.sleep(0.2)
            parts = (await api.room.list_participants(lk.ListParticipantsRequest(room="phone-room"))).participants
            phone = next((p for p in parts if p.identity == "sip_+15550001"), None)
            if phone is not None and phone.tracks:
                break
        code, log = await sipp
        report = await listener
    finally:
        sink.close()
        await api.aclose()
        server.stop()
    assert code == 0, log
    assert phone is not None, "the call never joined the room"
    assert phone.kind == models.ParticipantInfo.Kind.SIP and phone.name == "Phone +15550001"
    attrs = dict(phone.attributes)
    assert attrs["sip.phoneNumber"] == "+15550001" and attrs["sip.trunkPhoneNumber"] == "+15550100"
    assert attrs["sip.callID"].startswith("SCL_") and attrs["sip.trunkID"].startswith("ST_")
    assert attrs["sip.ruleID"].startswith("SDR_") and attrs["source"] == "pstn"
    assert_tone(report, "sip_+15550001", 440)  # the caller's tone, heard in the room
    heard = sink.pcm()
    assert len(heard) > 8000 * 3, f"the call heard {len(heard)} samples"
    assert abs(peak_hz(heard[8000:], 8000) - 660) < 10  # the room's tone, heard on the phone


@pytest.mark.parametrize("transport", ["udp", "tcp"])
async def test_wrong_password_refused(tmp_path, transport):
    server, sip_port = start_sip_server(tmp_path / "srv")
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    sink = await RtpSink.open()
    try:
        await setup_inbound(api, "locked-room")
        scenario = uac_scenario("+15550002", sink.port, expect_refused=403)
        code, log = await run_sipp(tmp_path / "sipp", scenario, f"127.0.0.1:{sip_port}", "-s", "+15550100",
                                   "-i", "127.0.0.1", "-au", "pbx", "-ap", "wrong",
                                   "-t", "t1" if transport == "tcp" else "u1")
        rooms = (await api.room.list_rooms(lk.ListRoomsRequest())).rooms
    finally:
        sink.close()
        await api.aclose()
        server.stop()
    assert code == 0, log
    assert "locked-room" not in [r.name for r in rooms]
    assert "invalid credentials" in server.log_text()


async def test_create_sip_participant_rings_sipp(tmp_path):
    server, _ = start_sip_server(tmp_path / "srv")
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    sink = await RtpSink.open()
    uas_port = __import__("sipfix").free_sip_port()
    try:
        trunk = await api.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(trunk=sip.SIPOutboundTrunkInfo(
            name="carrier", address=f"127.0.0.1:{uas_port}", numbers=["+15550199"])))
        sipp = asyncio.ensure_future(run_sipp(tmp_path / "uas", uas_scenario(sink.port, ring_ms=1000),
                                              "-i", "127.0.0.1", "-p", str(uas_port)))
        await asyncio.sleep(1.0)
        info = await api.sip.create_sip_participant(sip.CreateSIPParticipantRequest(
            sip_trunk_id=trunk.sip_trunk_id, sip_call_to="+15550123", room_name="dial-room",
            participant_identity="callee", wait_until_answered=True))
        parts = (await api.room.list_participants(lk.ListParticipantsRequest(room="dial-room"))).participants
        await asyncio.sleep(1.5)  # some call audio (silence) reaches the far end
        await api.room.remove_participant(lk.RoomParticipantIdentity(room="dial-room", identity="callee"))
        code, log = await sipp
    finally:
        sink.close()
        await api.aclose()
        server.stop()
    assert info.participant_identity == "callee" and info.room_name == "dial-room"
    assert info.sip_call_id.startswith("SCL_") and info.participant_id.startswith("PA_")
    callee = next(p for p in parts if p.identity == "callee")
    assert callee.kind == models.ParticipantInfo.Kind.SIP
    assert callee.attributes["sip.callStatus"] == "active" and callee.attributes["sip.phoneNumber"] == "+15550123"
    assert code == 0, log  # sipp got the INVITE, answered, and the BYE after the removal
    assert len(sink.packets) > 20


async def test_pin_rule_admits_caller_after_dtmf(tmp_path):
    server, sip_port = start_sip_server(tmp_path / "srv")
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    sink = await RtpSink.open()
    try:
        await api.sip.create_inbound_trunk(sip.CreateSIPInboundTrunkRequest(trunk=sip.SIPInboundTrunkInfo(
            name="local", allowed_addresses=["127.0.0.0/8"])))
        await api.sip.create_dispatch_rule(sip.CreateSIPDispatchRuleRequest(dispatch_rule=sip.SIPDispatchRuleInfo(
            rule=sip.SIPDispatchRule(dispatch_rule_direct=sip.SIPDispatchRuleDirect(room_name="vip", pin="1234")))))
        sipp = asyncio.ensure_future(run_sipp(
            tmp_path / "sipp", __import__("sipfix").uac_pin_scenario("+15550003", sink.port, "1234#"),
            f"127.0.0.1:{sip_port}", "-s", "+15550100", "-i", "127.0.0.1"))
        joined = None
        for _ in range(60):
            await asyncio.sleep(0.2)
            parts = (await api.room.list_participants(lk.ListParticipantsRequest(room="vip"))).participants
            joined = next((p for p in parts if p.identity == "sip_+15550003"), None)
            if joined is not None or sipp.done():
                break
        code, log = await sipp
    finally:
        sink.close()
        await api.aclose()
        server.stop()
    assert code == 0, log
    assert joined is not None, "the caller never got into the PIN room:\n" + server.log_text()[-3000:]
    assert joined.kind == models.ParticipantInfo.Kind.SIP


async def test_transfer_sends_refer(tmp_path):
    server, _ = start_sip_server(tmp_path / "srv")
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    sink = await RtpSink.open()
    uas_port = __import__("sipfix").free_sip_port()
    try:
        trunk = await api.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(trunk=sip.SIPOutboundTrunkInfo(
            address=f"127.0.0.1:{uas_port}", numbers=["+15550199"])))
        sipp = asyncio.ensure_future(run_sipp(tmp_path / "uas", __import__("sipfix").uas_transfer_scenario(sink.port),
                                              "-i", "127.0.0.1", "-p", str(uas_port)))
        await asyncio.sleep(1.0)
        await api.sip.create_sip_participant(sip.CreateSIPParticipantRequest(
            sip_trunk_id=trunk.sip_trunk_id, sip_call_to="+15550124", room_name="xfer-room", wait_until_answered=True))
        resp = await api.sip.transfer_sip_participant(sip.TransferSIPParticipantRequest(
            room_name="xfer-room", participant_identity="sip_+15550124", transfer_to="sip:+15550999@127.0.0.1"))
        code, log = await sipp
        left = (await api.room.list_participants(lk.ListParticipantsRequest(room="xfer-room"))).participants
    finally:
        sink.close()
        await api.aclose()
        server.stop()
    assert code == 0, log
    assert "Refer-To: <sip:+15550999@127.0.0.1>" in log, log  # LiveKit wraps a sip: URI in <>
    assert resp.transfer_id.startswith("STR_")
    assert [p.identity for p in left] == []


async def test_busy_callee_is_an_error_with_sip_status(tmp_path):
    server, _ = start_sip_server(tmp_path / "srv")
    api = lk.LiveKitAPI(server.url, API_KEY, API_SECRET)
    uas_port = __import__("sipfix").free_sip_port()
    try:
        trunk = await api.sip.create_outbound_trunk(sip.CreateSIPOutboundTrunkRequest(trunk=sip.SIPOutboundTrunkInfo(
            address=f"127.0.0.1:{uas_port}", numbers=["+15550199"])))
        sipp = asyncio.ensure_future(run_sipp(tmp_path / "uas", __import__("sipfix").UAS_BUSY,
                                              "-i", "127.0.0.1", "-p", str(uas_port)))
        await asyncio.sleep(1.0)
        with pytest.raises(lk.TwirpError) as e:
            await api.sip.create_sip_participant(sip.CreateSIPParticipantRequest(
                sip_trunk_id=trunk.sip_trunk_id, sip_call_to="+15550125", room_name="busy-room",
                wait_until_answered=True))
        code, log = await sipp
        parts = (await api.room.list_participants(lk.ListParticipantsRequest(room="busy-room"))).participants
    finally:
        await api.aclose()
        server.stop()
    assert code == 0, log
    assert e.value.code == "resource_exhausted" and "sip status 486" in e.value.message
    assert e.value.metadata == {"sip_status_code": "486", "sip_status": "Busy Here"}
    assert list(parts) == []  # the dialing participant left
