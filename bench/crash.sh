#!/usr/bin/env bash
# bench/crash.sh: the long crash test (issue 7, "Proof under fire").
#
# The storm of bench/storm.sh (10,000 alerts in 100 groups over about a minute, through a REAL
# Alertmanager, one group from a REAL Prometheus), during which nightshift (release build) is
# killed with SIGKILL at random moments and restarted, 20 rounds. Alertmanager reaches it
# through a recording proxy in the test that notes every webhook acknowledged with 200. After
# the last round, once everything has settled, the test checks from the store and the fakes:
# no acknowledged notification lost, every alert an incident, no action run twice (one PATCH
# per action key at the fake API server), every action left started settled (read back, or
# uncertain and escalated), every page delivered (re-sends of one dedup key counted), and no
# partial bundle. The kill moments come from a seed, printed: STORM_SEED=N replays them.
#
# It is the #[ignore]d test `crash_long` in tests/storm.rs; this script runs it in release mode
# and prints its summary block.
#
# Environment (all optional):
#   STORM_ROUNDS=20                kill -9 rounds, spread over 1.5 x STORM_SECONDS (down 0-0.5 s each)
#   STORM_ALERTS=10000 STORM_GROUPS=100 STORM_SECONDS=60   the storm
#   STORM_SEED=N  STORM_BUDGET=12  STORM_SETTLE_SECS=600  STORM_KEEP_DIR=DIR
#   STORM_TIMEOUT=1800             overall bound, seconds
set -euo pipefail
cd "$(dirname "$0")/.."

export STORM_ROUNDS=${STORM_ROUNDS:-20}
export STORM_ALERTS=${STORM_ALERTS:-10000}
export STORM_GROUPS=${STORM_GROUPS:-100}
export STORM_SECONDS=${STORM_SECONDS:-60}
export STORM_SETTLE_SECS=${STORM_SETTLE_SECS:-600}
timeout_s=${STORM_TIMEOUT:-1800}

out=$(mktemp /tmp/nightshift-crash.XXXXXX.log)
echo "crash: building (release) and running tests/storm.rs crash_long; full output in $out" >&2
set +e
timeout --signal=INT "$timeout_s" \
  cargo test --release --test storm crash_long -- --ignored --nocapture --test-threads=1 \
  >"$out" 2>&1
rc=$?
set -e
grep -oE '(crash: seed|round [0-9]+: kill|kept the store).*' "$out" || true
if grep -q '^==== nightshift crash summary' "$out"; then
  sed -n '/^==== nightshift crash summary/,/^==== end/p' "$out"
else
  echo "crash: no summary (the run did not finish); last lines:" >&2
  tail -40 "$out" >&2
fi
grep -E '^test result' "$out" || true
[ $rc -eq 124 ] && echo "crash: timed out after ${timeout_s}s" >&2
exit $rc
