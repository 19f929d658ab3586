"""Egress uploads: S3 (boto3) into moto's server, Azure Blob into Azurite (npm), and a failing
upload ending FAILED with the reason while the recording stays on local disk."""

from __future__ import annotations

import asyncio
import base64
import email.utils
import hashlib
import hmac
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from conftest import NODE_DIR, free_port, stop_peer
from egressfix import Publisher, S, eg_server, lkapi, probe, start_egress_server, wait_status  # noqa: F401
from livekit import api

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    import socket

    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_peer(proc)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    exe = NODE_DIR / "node_modules" / ".bin" / "azurite-blob"
    if not exe.exists():
        pytest.fail("azurite is missing: run `make test` (npm ci in tests/node)")
    port = free_port()
    proc = subprocess.Popen([str(exe), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--silent",
                             "--skipApiVersionCheck", "--location", str(tmp_path_factory.mktemp("azurite"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop_peer(proc)


def azure_request(base: str, method: str, path: str, query: str = "") -> bytes:
    """A Shared Key signed request to Azurite (written here from the REST docs, independently)."""
    date = email.utils.formatdate(usegmt=True)
    headers = {"x-ms-date": date, "x-ms-version": "2021-08-06"}
    canon_query = "".join(f"\n{k}:{v}" for k, v in sorted(p.split("=", 1) for p in query.split("&") if p))
    to_sign = "\n".join([method, "", "", "", "", "", "", "", "", "", "", ""]) + "\n" + \
        "\n".join(f"{k}:{v}" for k, v in sorted(headers.items())) + f"\n/{AZURITE_ACCOUNT}{path}" + canon_query
    sig = base64.b64encode(hmac.new(base64.b64decode(AZURITE_KEY), to_sign.encode(), hashlib.sha256).digest())
    headers["Authorization"] = f"SharedKey {AZURITE_ACCOUNT}:{sig.decode()}"
    req = urllib.request.Request(base + path + ("?" + query if query else ""), method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.read()


async def record_to(server, room: str, **outputs) -> api.EgressInfo:
    async with lkapi(server) as lk:
        await lk.room.create_room(api.CreateRoomRequest(name=room))
        async with Publisher(server, room, "uploader", "--audio", "440", "--video", "320x240"):
            info = await lk.egress.start_room_composite_egress(api.RoomCompositeEgressRequest(
                room_name=room, advanced=api.EncodingOptions(width=640, height=360), **outputs))
            await wait_status(lk, info.egress_id, (S.EGRESS_ACTIVE,))
            await asyncio.sleep(3)
            await lk.egress.stop_egress(api.StopEgressRequest(egress_id=info.egress_id))
            return await wait_status(lk, info.egress_id, (S.EGRESS_COMPLETE, S.EGRESS_FAILED), timeout=60)


async def test_s3_upload_lands_in_moto(eg_server, moto_url, tmp_path):
    s3 = boto3.client("s3", endpoint_url=moto_url, region_name="us-east-1", aws_access_key_id="AK",
                      aws_secret_access_key="SK")
    s3.create_bucket(Bucket="recordings")
    upload = api.S3Upload(access_key="AK", secret="SK", bucket="recordings", region="us-east-1", endpoint=moto_url,
                          force_path_style=True, metadata={"team": "egress"}, tagging="kind=test")
    done = await record_to(eg_server, "s3-room", file_outputs=[api.EncodedFileOutput(filepath="s3/{room_name}.mp4",
                                                                                     s3=upload)])
    assert done.status == S.EGRESS_COMPLETE, done
    f = done.file_results[0]
    assert f.location == f"{moto_url}/recordings/s3/s3-room.mp4"
    assert done.room_composite.file_outputs[0].s3.secret == "{secret}"  # the stored request is redacted
    obj = s3.get_object(Bucket="recordings", Key="s3/s3-room.mp4")
    assert obj["Metadata"] == {"team": "egress"} and obj["ContentType"] == "video/mp4"
    tags = s3.get_object_tagging(Bucket="recordings", Key="s3/s3-room.mp4")["TagSet"]
    assert tags == [{"Key": "kind", "Value": "test"}]
    local = tmp_path / "s3.mp4"
    local.write_bytes(obj["Body"].read())
    p = probe(local)
    assert p.streams == {"video": "h264", "audio": "aac"} and (p.width, p.height) == (640, 360)
    assert abs(p.peak_hz - 440) < 5 and len(local.read_bytes()) == f.size
    manifest = s3.get_object(Bucket="recordings", Key=f"s3/{done.egress_id}.json")["Body"].read()
    assert done.manifest_location.endswith(f"/recordings/s3/{done.egress_id}.json") and b"s3-room.mp4" in manifest


async def test_azure_upload_lands_in_azurite(tmp_path, azurite):
    azure_request(azurite, "PUT", f"/{AZURITE_ACCOUNT}/rec", "restype=container")
    server = start_egress_server(tmp_path / "srv", f"""  storage_endpoints: {{azure: "{azurite}/{{account_name}}"}}""")
    try:
        done = await record_to(server, "az-room", segment_outputs=[api.SegmentedFileOutput(
            filename_prefix="az/seg", segment_duration=2, filename_suffix=api.SegmentedFileSuffix.TIMESTAMP,
            azure=api.AzureBlobUpload(
                account_name=AZURITE_ACCOUNT, account_key=AZURITE_KEY, container_name="rec"))])
    finally:
        server.stop()
    assert done.status == S.EGRESS_COMPLETE, done
    seg = done.segment_results[0]
    assert seg.playlist_location == f"{azurite}/{AZURITE_ACCOUNT}/rec/az/seg.m3u8"
    playlist = azure_request(azurite, "GET", f"/{AZURITE_ACCOUNT}/rec/az/seg.m3u8").decode()
    names = [ln for ln in playlist.splitlines() if ln.endswith(".ts")]
    assert len(names) == seg.segment_count >= 2 and playlist.rstrip().endswith("#EXT-X-ENDLIST")
    assert all(re.fullmatch(r"seg_\d{17}\.ts", n) for n in names) and names == sorted(names)  # UTC + ms
    for name in names:
        data = azure_request(azurite, "GET", f"/{AZURITE_ACCOUNT}/rec/az/{name}")
        (tmp_path / name).write_bytes(data)
        assert probe(tmp_path / name).streams == {"video": "h264", "audio": "aac"}


async def test_failed_upload_fails_and_keeps_the_file(eg_server):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    done = await record_to(eg_server, "dead-s3", file_outputs=[api.EncodedFileOutput(
        filepath="dead.mp4", s3=api.S3Upload(access_key="AK", secret="SK", bucket="b", endpoint=dead,
                                           force_path_style=True))])
    assert done.status == S.EGRESS_FAILED, done
    assert done.error.startswith("S3 upload failed: ") and done.error_code == 500
    assert done.details == "End reason: StopEgress API"  # as LiveKit: a failure keeps the end reason set before
    kept = Path(eg_server.data_dir) / "egress-tmp" / done.egress_id / "dead.mp4"
    assert kept.exists() and probe(kept).streams == {"video": "h264", "audio": "aac"}
    shutil.rmtree(kept.parent)
    assert not os.path.exists(kept)
