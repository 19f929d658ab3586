#!/usr/bin/env bash
# The whole suite in two pytest lanes at once, then the shaped-link tests alone:
#   lane 1: the realtime tests (tests/rtc, tests/sip, tests/agents: official clients, browsers;
#           one test at a time, as they are sensitive to each other)
#   lane 2: everything else
#   then:   tests/rtc/test_rtc_media_quality.py (clients behind a tc-shaped veth: congestion,
#           loss repair, connection quality), on a quiet machine: their bandwidth estimates and
#           repair timings are what they test, and CPU load elsewhere skews them.
# Most tests wait on real clocks (clients that run for seconds, timeouts, retries), so two lanes
# take about half the time on two cores. Lane 1's output is printed after lane 2's; the exit
# status is the first failing part's.
#   usage: scripts/run-tests.sh PYTHON [PYTEST ARGS...]   (inside scripts/in-netns.sh)
set -uo pipefail
PY="$1"
shift
LOGS="${LKSERVER_TEST_LOGS:-.test-logs}"
SHAPED=tests/rtc/test_rtc_media_quality.py
mkdir -p "$LOGS"
"$PY" -m pytest "$@" --ignore="$SHAPED" tests/rtc tests/sip tests/agents >"$LOGS/realtime.log" 2>&1 &
RT=$!
# lane 2 stops lane 1 if it is interrupted
trap 'kill $RT 2>/dev/null' INT TERM
echo "== tests/rtc, tests/sip and tests/agents run alongside (output follows; live in $LOGS/realtime.log)"
"$PY" -m pytest "$@" --ignore=tests/rtc --ignore=tests/sip --ignore=tests/agents tests
REST=$?
wait $RT
RT_STATUS=$?
echo
echo "== tests/rtc, tests/sip, tests/agents"
cat "$LOGS/realtime.log"
echo "== $SHAPED (alone)"
"$PY" -m pytest "$@" "$SHAPED"
SHAPED_STATUS=$?
echo "== exit status: the rest $REST, realtime $RT_STATUS, shaped links $SHAPED_STATUS"
for s in "$REST" "$RT_STATUS" "$SHAPED_STATUS"; do
  if [ "$s" -ne 0 ]; then exit "$s"; fi
done
exit 0
