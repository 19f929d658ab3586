#!/usr/bin/env bash
# Run a command inside a private network namespace made for WebRTC tests on one machine.
#
# libwebrtc (Chromium, the Rust-based Python and Node SDKs) ignores loopback interfaces, so the
# namespace gets a TAP device carrying 127.0.0.2/32 next to `lo`: clients gather a host candidate
# on it and reach the server's 127.0.0.1 candidates over loopback. All traffic stays inside the
# namespace. Needs root (or unprivileged user namespaces) and /dev/net/tun.
#   usage: scripts/in-netns.sh COMMAND [ARGS...]
set -euo pipefail
if [ "${LKSERVER_NETNS:-}" = "1" ]; then exec "$@"; fi
if [ "${1:-}" != "--inside" ]; then
  exec unshare --net -- "$0" --inside "$@"
fi
shift
ip link set lo up
ip tuntap add dev lk0 mode tap
# a TAP device has carrier only while a process holds it open
python3 -c '
import fcntl, os, signal, struct, sys
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", b"lk0", 0x0002 | 0x1000))
signal.pause()
' &
HOLDER=$!
trap 'kill $HOLDER 2>/dev/null || true' EXIT
sysctl -qw net.ipv6.conf.lk0.disable_ipv6=1 2>/dev/null || true
ip addr add 127.0.0.2/32 dev lk0
ip link set lk0 up
for _ in $(seq 100); do ip link show lk0 | grep -q LOWER_UP && break; sleep 0.05; done
export LKSERVER_NETNS=1
"$@"
