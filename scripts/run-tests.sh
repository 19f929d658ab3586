#!/usr/bin/env bash
# The whole suite in two pytest processes at once: the realtime tests (tests/rtc: official
# clients, browsers, shaped links; one at a time, as they are sensitive to each other) next to
# everything else. Most tests wait on real clocks (clients that run for seconds, timeouts,
# retries), so two lanes take about half the time on two cores. The realtime lane's output is
# printed after the other's; the exit status is the first failing lane's.
#   usage: scripts/run-tests.sh PYTHON [PYTEST ARGS...]   (inside scripts/in-netns.sh)
set -uo pipefail
PY="$1"
shift
LOGS="${LKSERVER_TEST_LOGS:-.test-logs}"
mkdir -p "$LOGS"
"$PY" -m pytest "$@" tests/rtc >"$LOGS/rtc.log" 2>&1 &
RTC=$!
# the other lane stops the realtime one if it is interrupted
trap 'kill $RTC 2>/dev/null' INT TERM
echo "== tests/rtc runs alongside (its output follows; live in $LOGS/rtc.log)"
"$PY" -m pytest "$@" --ignore=tests/rtc tests
REST=$?
wait $RTC
RTC_STATUS=$?
echo
echo "== tests/rtc"
cat "$LOGS/rtc.log"
echo "== exit status: tests/rtc $RTC_STATUS, the rest $REST"
if [ "$REST" -ne 0 ]; then exit "$REST"; fi
exit "$RTC_STATUS"
