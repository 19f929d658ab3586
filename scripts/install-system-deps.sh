#!/usr/bin/env bash
# Debian packages the test suite uses; installed only when missing (needs root or sudo).
# redis-server: the Redis store tests; chromium: livekit-client's realtime tests (driven by
# playwright-core with executablePath /usr/bin/chromium; no browser is ever downloaded); ffmpeg: the
# ingress tests' RTMP encoder (pushes a test pattern with a tone, as OBS would); sip-tester: sipp,
# the far end of the SIP call tests.
set -euo pipefail
PKGS=(redis-server chromium ffmpeg sip-tester)
missing=()
for p in "${PKGS[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
