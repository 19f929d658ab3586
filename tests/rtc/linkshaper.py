"""A client behind a shaped link: a second network namespace joined to the test namespace by a
veth pair, with tc shaping the server -> client direction (tbf for bandwidth, an htb class fed by
a u32 match on the IP id for a steady fraction of lost packets; this kernel has no netem).

Only UDP is lost (media, ICE, DTLS): the IP id of a TCP SYN-ACK is 0, so it would match every
time, and a TCP segment parked in a qdisc is never retransmitted by the kernel while it is there
(the first version parked matches in a 1-packet queue, which froze a client's signalling for a
minute when the first match was TCP). The loss class's queue holds nothing: matches are dropped.

The server must listen on (and advertise) SERVER_IP as well as 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

SERVER_IP = "10.9.0.1"
CLIENT_IP = "10.9.0.2"
DEV = "lkva"
PEER = "lkvb"


def sh(*cmd: str) -> None:
    subprocess.run(list(cmd), check=True, capture_output=True)


class ShapedLink:
    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []
        self.upstream_loss = 0

    def create(self) -> "ShapedLink":
        subprocess.run(["ip", "link", "del", DEV], capture_output=True)
        sh("ip", "link", "add", DEV, "type", "veth", "peer", "name", PEER)
        sh("ip", "addr", "add", f"{SERVER_IP}/24", "dev", DEV)
        sh("ip", "link", "set", DEV, "up")
        return self

    async def spawn(self, *cmd: str) -> asyncio.subprocess.Process:
        """Run a command in a fresh namespace on the far side of the link."""
        script = (f"ip link set lo up; n=0; while ! ip link show {PEER} >/dev/null 2>&1; do n=$((n+1)); "
                  f"[ $n -gt 400 ] && exit 98; sleep 0.05; done; "
                  f"ip addr add {CLIENT_IP}/24 dev {PEER}; ip link set {PEER} up; {self._upstream_setup()}"
                  'exec "$@"')
        proc = await asyncio.create_subprocess_exec(
            "unshare", "--net", "--", "sh", "-c", script, "shaped", *cmd,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        # move the peer only once the child has its own namespace: before `unshare` has run, the
        # move would "succeed" into our namespace and the child would wait for the peer forever
        own = os.readlink("/proc/self/ns/net")
        for _ in range(400):
            try:
                moved = (os.readlink(f"/proc/{proc.pid}/ns/net") != own and subprocess.run(
                    ["ip", "link", "set", PEER, "netns", str(proc.pid)], capture_output=True).returncode == 0)
            except OSError:
                moved = False
            if moved:
                break
            await asyncio.sleep(0.025)
        else:
            proc.kill()
            raise RuntimeError("the shaped client's namespace did not come up")
        self.procs.append(proc)
        return proc

    def limit(self, kbit: int) -> None:
        """Cap the server -> client rate; excess queues up to 200 ms, then is dropped."""
        self.clear()
        sh("tc", "qdisc", "add", "dev", DEV, "root", "tbf", "rate", f"{kbit}kbit", "burst", "16kbit",
           "latency", "200ms")

    def lose_one_in(self, n: int) -> None:
        """Drop about 1 in n UDP datagrams (those whose IP id is a multiple of n; n a power of two)."""
        self.clear()
        sh("tc", "qdisc", "add", "dev", DEV, "root", "handle", "1:", "htb", "default", "10")
        sh("tc", "class", "add", "dev", DEV, "parent", "1:", "classid", "1:10", "htb", "rate", "1gbit")
        sh("tc", "class", "add", "dev", DEV, "parent", "1:", "classid", "1:20", "htb", "rate", "8bit", "ceil", "8bit")
        sh("tc", "qdisc", "add", "dev", DEV, "parent", "1:20", "pfifo", "limit", "0")
        sh("tc", "filter", "add", "dev", DEV, "parent", "1:", "protocol", "ip", "u32",
           "match", "ip", "protocol", "17", "0xff", "match", "u16", "0x0000", hex(n - 1), "at", "4", "flowid", "1:20")

    def lose_upstream_one_in(self, n: int) -> None:
        """Drop about 1 in n packets the next spawned client sends (its own side of the link is
        shaped like `lose_one_in`'s; this kernel has no tc actions to drop on ingress)."""
        self.upstream_loss = n

    def _upstream_setup(self) -> str:
        n = self.upstream_loss
        if not n:
            return ""
        return (f"tc qdisc add dev {PEER} root handle 1: htb default 10 && "
                f"tc class add dev {PEER} parent 1: classid 1:10 htb rate 1gbit && "
                f"tc class add dev {PEER} parent 1: classid 1:20 htb rate 8bit ceil 8bit && "
                f"tc qdisc add dev {PEER} parent 1:20 pfifo limit 0 && "
                f"tc filter add dev {PEER} parent 1: protocol ip u32 match ip protocol 17 0xff "
                f"match u16 0x0000 {hex(n - 1)} at 4 flowid 1:20 "
                "|| exit 97; ")

    def clear(self) -> None:
        subprocess.run(["tc", "qdisc", "del", "dev", DEV, "root"], capture_output=True)

    def destroy(self) -> None:
        self.clear()
        subprocess.run(["ip", "link", "del", DEV], capture_output=True)


async def shaped_py_client(link: ShapedLink, url: str, token: str, *args: str, timeout: float = 90.0) -> dict:
    import json
    from pathlib import Path

    client = Path(__file__).resolve().parent / "py_client.py"
    proc = await link.spawn(sys.executable, str(client), url, token, *args)
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    assert lines, f"shaped client failed ({proc.returncode}):\n{err.decode()[-3000:]}"
    return json.loads(lines[-1])
