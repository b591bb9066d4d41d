#!/usr/bin/env bash
# Backlog benchmark for nightshift (issue 13, "the backlog drains slowly").
#
# Starts a release nightshift on a temporary state directory with the built-in default rule
# (an empty rules directory) and no probes, posts 100,000 alerts as 2,000 webhooks of 50
# (distinct groups and fingerprints, concurrently, bearer auth as in production), then polls
# /metrics and the store (bounded) until every decision is recorded and every initial bundle
# written, and reports:
#   - post time (first request sent → last 200 received; 503s are retried and counted)
#   - first → last decision (the store's decision times)
#   - time until every initial bundle is written (from the first post, and from the first
#     decision)
#   - nightshift_decisions_total against the decisions in the store
#   - initial bundles written (nightshift_bundles_written_total{version="initial"}) against
#     incidents, and against bundles recorded in the store
#   - the daemon's peak RSS (VmHWM) and CPU time
#
# Usage: bench/backlog.sh
#
# Environment (all optional):
#   NIGHTSHIFT_BIN=...    binary to test (default target/release/nightshift, built if missing)
#   WEBHOOKS=2000         webhooks posted
#   ALERTS_PER=50         alerts in each
#   CONCURRENCY=16        requests in flight at once
#   SETTLE_TIMEOUT=600    seconds to wait for every decision and bundle
#   QUIET_SECONDS=5       after everything is written, how long the counters must stay still
#                         (a bundle written twice shows up as a late increment)
#   BENCH_DIR=...         parent of the temporary state directory (default target/bench-tmp)
#   KEEP=1                keep the state directory (database, bundles, log) after the run
#   RESULTS_FILE=...      also append one summary row (TSV) to this file
#
# Everything talks to 127.0.0.1 only, and every wait is bounded.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

WEBHOOKS=${WEBHOOKS:-2000}
ALERTS_PER=${ALERTS_PER:-50}
CONCURRENCY=${CONCURRENCY:-16}
SETTLE_TIMEOUT=${SETTLE_TIMEOUT:-600}
QUIET_SECONDS=${QUIET_SECONDS:-5}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench-tmp}

log() { printf '[backlog] %s\n' "$*" >&2; }
die() { printf '[backlog] error: %s\n' "$*" >&2; exit 1; }

command -v python3 >/dev/null 2>&1 || die "python3 is needed (client, store reads)"
command -v curl >/dev/null 2>&1 || die "curl is needed"

# ---------------------------------------------------------------- binary, state directory
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binary
bench_state backlog
mkdir -p "$STATE/rules"
cat >"$STATE/nightshift.toml" <<EOF
# Written by bench/backlog.sh: defaults, except the address, the state dir, an ingest
# credential and an empty rules directory (every alert takes the built-in default rule, which
# has no probes).
[server]
listen = "127.0.0.1:0"

[auth]
ingest_token_file = "$STATE/ingest_token"

[store]
dir = "$STATE/var"

[rules]
dir = "$STATE/rules"

[log]
format = "human"
level = "warn"
EOF

src_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
log "machine: nproc=$(nproc) load=$(cut -d' ' -f1-3 /proc/loadavg) kernel=$(uname -r)"
log "binary: $BIN (built $(date -u -r "$BIN" +%FT%TZ); script at $src_rev)"
log "state dir: $STATE"

# ---------------------------------------------------------------- start nightshift
"$BIN" --config "$STATE/nightshift.toml" run >"$STATE/nightshift.log" 2>&1 &
PID=$!
ADDR_FILE=$STATE/var/nightshift.addr
URL=""
for ((i = 0; i < 200; i++)); do # 20 s
    if [[ -s $ADDR_FILE ]]; then
        URL=$(head -n1 "$ADDR_FILE")
        [[ $URL == http://127.0.0.1:* ]] && break
        URL=""
    fi
    kill -0 "$PID" 2>/dev/null || { cat "$STATE/nightshift.log" >&2; die "nightshift exited during start"; }
    sleep 0.1
done
[[ -n $URL ]] || { cat "$STATE/nightshift.log" >&2; die "no address in $ADDR_FILE after 20 s"; }
log "nightshift (pid $PID) listening on $URL"

# ---------------------------------------------------------------- post the backlog
# Prints: POST start_ms end_ms seconds requests retries
log "posting $((WEBHOOKS * ALERTS_PER)) alerts as $WEBHOOKS webhooks of $ALERTS_PER, $CONCURRENCY at once"
POST_LINE=$(python3 - "$URL" "$TOKEN" "$WEBHOOKS" "$ALERTS_PER" "$CONCURRENCY" <<'PY'
import http.client, json, sys, threading, time, urllib.parse
url, token, webhooks, per, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
parsed = urllib.parse.urlparse(url)

def body(n):
    alerts = []
    for a in range(per):
        i = n * per + a
        alerts.append({
            "status": "firing",
            "labels": {"alertname": "BacklogAlert", "instance": "host-%06d.example.net:9100" % i,
                       "job": "node", "group": "g%04d" % n, "severity": "warning"},
            "annotations": {"summary": "BacklogAlert on host-%06d" % i,
                            "runbook_url": "https://runbooks.example.net/backlog"},
            "startsAt": "2026-03-14T02:10:07.123Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus.example.net:9090/graph?g0.expr=up",
            "fingerprint": "%016x" % (0xb0000000 + i),
        })
    return json.dumps({
        "version": "4", "groupKey": "{}:{group=\"g%04d\"}" % n, "truncatedAlerts": 0,
        "status": "firing", "receiver": "nightshift", "groupLabels": {"group": "g%04d" % n},
        "commonLabels": {"job": "node"}, "commonAnnotations": {},
        "externalURL": "http://alertmanager.example.net:9093", "alerts": alerts,
    }).encode()

bodies = [body(n) for n in range(webhooks)]
lock = threading.Lock()
next_index = [0]
retries = [0]
failures = []

def worker():
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
    while True:
        with lock:
            if next_index[0] >= len(bodies):
                break
            n = next_index[0]; next_index[0] += 1
        for attempt in range(200):
            try:
                conn.request("POST", "/webhook", bodies[n], {
                    "Content-Type": "application/json", "Authorization": "Bearer " + token,
                    "User-Agent": "Alertmanager/0.28.1"})
                response = conn.getresponse(); response.read()
                status = response.status
            except (OSError, http.client.HTTPException):
                conn.close(); conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=60)
                status = 0
            if status == 200:
                break
            if status not in (0, 503):
                failures.append((n, status)); break
            with lock:
                retries[0] += 1
            time.sleep(0.2)
        else:
            failures.append((n, "gave up"))
    conn.close()

start = time.time()
threads = [threading.Thread(target=worker) for _ in range(concurrency)]
for t in threads: t.start()
for t in threads: t.join()
end = time.time()
if failures:
    print("FAILED %d requests, first: %r" % (len(failures), failures[:3]), file=sys.stderr)
    sys.exit(1)
print("POST %d %d %.3f %d %d" % (start * 1000, end * 1000, end - start, webhooks, retries[0]))
PY
) || die "posting failed"
read -r _ POST_START_MS POST_END_MS POST_SECS POST_REQUESTS POST_RETRIES <<<"$POST_LINE"
log "posted in ${POST_SECS}s ($POST_RETRIES retries after 503)"

# ---------------------------------------------------------------- wait for the drain
EXPECTED=$((WEBHOOKS * ALERTS_PER))
DB=$STATE/var/nightshift.db
[[ -f $DB ]] || DB=$(ls "$STATE"/var/*.db | head -n1)

scrape() { curl -sf --max-time 5 "$URL/metrics" || true; }
# decisions_total (sum over labels) and initial bundles written, from /metrics
metric_counts() {
    scrape | awk '
        /^nightshift_decisions_total\{/ {d += $2}
        /^nightshift_bundles_written_total\{version="initial"\}/ {b += $2}
        /^nightshift_bundles_written_total\{version="failed"\}/ {f += $2}
        END {printf "%d %d %d\n", d, b, f}'
}
# From the store (read-only): decisions, incidents, bundles written or final, bundles owed
store_counts() {
    python3 - "$DB" <<'PY'
import sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=10)
q = lambda sql: c.execute(sql).fetchone()[0] or 0
print(q("SELECT count(*) FROM decisions"), q("SELECT count(*) FROM episodes"),
      q("SELECT count(*) FROM bundles WHERE state IN ('written', 'final')"),
      q("SELECT count(*) FROM bundles WHERE state = 'pending'"))
PY
}

log "waiting (at most ${SETTLE_TIMEOUT}s) for $EXPECTED decisions and initial bundles"
deadline=$(($(date +%s) + SETTLE_TIMEOUT))
quiet_since=""
last=""
ALL_DONE_MS=""
while :; do
    now=$(date +%s)
    ((now < deadline)) || { log "not drained after ${SETTLE_TIMEOUT}s"; break; }
    kill -0 "$PID" 2>/dev/null || { tail -20 "$STATE/nightshift.log" >&2; die "nightshift exited"; }
    read -r m_decisions m_bundles m_failed < <(metric_counts)
    read -r s_decisions s_incidents s_bundles s_owed < <(store_counts)
    state="$m_decisions $m_bundles $s_decisions $s_bundles"
    if ((s_decisions >= EXPECTED && s_bundles >= s_incidents && s_owed == 0 && s_incidents > 0)); then
        [[ -n $ALL_DONE_MS ]] || ALL_DONE_MS=$(date +%s%3N)
        if [[ $state != "$last" ]]; then
            quiet_since=$now
        elif ((now - quiet_since >= QUIET_SECONDS)); then
            break
        fi
    fi
    last=$state
    sleep 0.5
done

# ---------------------------------------------------------------- report
read -r m_decisions m_bundles m_failed < <(metric_counts)
read -r s_decisions s_incidents s_bundles s_owed < <(store_counts)
read -r first_decision last_decision last_bundle first_received < <(python3 - "$DB" <<'PY'
import sqlite3, sys
c = sqlite3.connect("file:%s?mode=ro" % sys.argv[1], uri=True, timeout=10)
r = c.execute("SELECT min(at), max(at) FROM decisions").fetchone()
b = c.execute("SELECT max(written_at) FROM bundles").fetchone()
n = c.execute("SELECT min(received_at) FROM notifications").fetchone()
print(r[0] or 0, r[1] or 0, b[0] or 0, n[0] or 0)
PY
)
hwm_kb=$(awk '/^VmHWM/ {print $2}' "/proc/$PID/status")
cpu_secs=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$PID/stat")
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f", (b - a) / 1000}'; }
decide_secs=$(secs "$first_decision" "$last_decision")
bundles_from_post=$(secs "$POST_START_MS" "$last_bundle")
bundles_from_decision=$(secs "$first_decision" "$last_bundle")
decided_from_post=$(secs "$POST_START_MS" "$last_decision")
rate=$(awk -v n="$s_decisions" -v s="$decide_secs" 'BEGIN {printf "%.0f", (s > 0 ? n / s : 0)}')
rss_mb=$(awk -v k="$hwm_kb" 'BEGIN {printf "%.1f", k / 1024}')

printf '\n=== backlog: %d alerts as %d webhooks of %d, %d at once ===\n' "$EXPECTED" "$WEBHOOKS" "$ALERTS_PER" "$CONCURRENCY"
printf 'post:                          %ss (%s retries after 503)\n' "$POST_SECS" "$POST_RETRIES"
printf 'first → last decision:         %ss (%s decisions/s); last decision %ss after the first post\n' \
    "$decide_secs" "$rate" "$decided_from_post"
if ((s_owed == 0)); then
    printf 'every initial bundle written:  %ss after the first post (%ss after the first decision)\n' \
        "$bundles_from_post" "$bundles_from_decision"
else
    printf 'every initial bundle written:  NOT within the bound: %s still owed (last written %ss after the first post)\n' \
        "$s_owed" "$bundles_from_post"
fi
printf 'decisions_total vs store:      %s counted, %s in the store\n' "$m_decisions" "$s_decisions"
printf 'initial bundles vs incidents:  %s written (metric), %s in the store, %s incidents, %s owed, %s failed attempts\n' \
    "$m_bundles" "$s_bundles" "$s_incidents" "$s_owed" "$m_failed"
printf 'daemon peak RSS (VmHWM):       %s MB; CPU %ss\n' "$rss_mb" "$cpu_secs"
if [[ -n ${RESULTS_FILE:-} ]]; then
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$BIN" "$POST_SECS" \
        "$decide_secs" "$bundles_from_post" "$m_decisions" "$s_decisions" "$m_bundles" "$s_incidents" \
        "$rss_mb" "$cpu_secs" >>"$RESULTS_FILE"
fi

log "stopping nightshift (SIGTERM)"
stop_server
warnings=$(grep -cE ' (WARN|ERROR) ' "$STATE/nightshift.log" || true)
echo "log: ${warnings:-0} WARN/ERROR lines; the first:"
grep -E ' (WARN|ERROR) ' "$STATE/nightshift.log" | head -n 3 || true
ok=1
((s_decisions == EXPECTED)) || { echo "check: FAILED: $s_decisions decisions in the store, expected $EXPECTED"; ok=0; }
((m_decisions == s_decisions)) || { echo "check: FAILED: decisions_total $m_decisions != $s_decisions recorded"; ok=0; }
((m_bundles == s_incidents && s_bundles == s_incidents)) || {
    echo "check: FAILED: $m_bundles initial bundles written for $s_incidents incidents"; ok=0; }
((ok)) && echo "check: every alert decided once, every incident's initial bundle written once"
((ok))
