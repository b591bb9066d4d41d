#!/usr/bin/env bash
# bench/storm.sh: the full-size storm (issue 7, "Proof under fire"); bench/crash.sh runs the
# same storm with kill -9 rounds through this script.
#
# 10,000 alerts in 100 groups over about a minute through a REAL Alertmanager (Debian
# prometheus-alertmanager 0.25; group_by [alertname, group], group_wait 1s, group_interval 5s,
# webhook max_alerts 0), one group of them raised by a REAL Prometheus evaluating a real
# alerting rule, into the release build of nightshift with fakes for PagerDuty, the Kubernetes
# API, Prometheus's query API, the status page and a health endpoint. The storm and its fakes
# are the test `storm::storm` in tests/it/storm.rs (short when run by `cargo test`; the fakes live in
# tests/it/fakes); this script sizes it, runs it in release mode and prints its summary block.
#
# Environment (all optional):
#   STORM_ALERTS=10000 STORM_GROUPS=100 STORM_SECONDS=60   the storm
#   STORM_SEED=N            replay a run (the seed picks the group layout; printed)
#   STORM_BUDGET=12         [actions] hourly_budget
#   STORM_SETTLE_SECS=600   how long to wait for every decision, bundle, action and page
#   STORM_KEEP_DIR=DIR      keep the store (nightshift.db) and the logs there
#   STORM_TIMEOUT=1800      overall bound, seconds
#   ALERTMANAGER_BIN, PROMETHEUS_BIN   binaries (default: from PATH)
# Exit status: the test's (0 when every check passed; the latency targets are checked, as
# this is a release build, unless there are kill rounds).
set -euo pipefail
cd "$(dirname "$0")/.."

test_name=${STORM_TEST:-storm}
export STORM_ALERTS=${STORM_ALERTS:-10000}
export STORM_GROUPS=${STORM_GROUPS:-100}
export STORM_SECONDS=${STORM_SECONDS:-60}
export STORM_BUDGET=${STORM_BUDGET:-12}
export STORM_SETTLE_SECS=${STORM_SETTLE_SECS:-600}
timeout_s=${STORM_TIMEOUT:-1800}

out=$(mktemp "/tmp/nightshift-$test_name.XXXXXX.log")
echo "$test_name: building (release) and running tests/it/storm.rs $test_name; full output in $out" >&2
set +e
timeout --signal=INT "$timeout_s" \
  cargo test --release --test it "storm::$test_name" -- --exact --nocapture --test-threads=1 \
  >"$out" 2>&1
rc=$?
set -e
grep -oE "($test_name: seed|round [0-9]+: kill|kept the store).*" "$out" || true
if grep -q "^==== nightshift $test_name summary" "$out"; then
  sed -n "/^==== nightshift $test_name summary/,/^==== end/p" "$out"
else
  echo "$test_name: no summary (the run did not finish); last lines:" >&2
  tail -40 "$out" >&2
fi
grep -E '^test result' "$out" || true
[ $rc -eq 124 ] && echo "$test_name: timed out after ${timeout_s}s" >&2
exit $rc
