#!/usr/bin/env bash
# Durable webhook ingest benchmark for nightshift (issue 2).
#
# Starts a release nightshift pinned to CPU 0, measures the disk's fsync rate in the state
# directory, then drives POST /webhook with wrk pinned to CPU 1 (a realistic 5-alert
# Alertmanager v4 body, bearer-token auth as in production) at each connection count, and
# reads nightshift's own /metrics after each run (group-commit batch size, outcomes).
#
# Usage: bench/webhook.sh            (from anywhere; paths are relative to the repository)
#
# Environment (all optional):
#   DURATION=20s          wrk duration of each measured run
#   CONNECTIONS="16 64"   connection counts, in order
#   WRK_THREADS=2         wrk threads (all pinned to WRK_CPU)
#   WARMUP=2s             short warm-up run before the first measured run ("0" to skip)
#   SERVER_CPU=0          CPU nightshift is pinned to
#   WRK_CPU=1             CPU wrk and the fsync probe are pinned to
#   FSYNC_SECONDS=3       length of the fsync probe
#   NIGHTSHIFT_BIN=...    binary to test (default target/release/nightshift, built if missing)
#   BENCH_DIR=...         parent of the temporary state directory (default target/bench-tmp,
#                         i.e. on the project's filesystem)
#   KEEP=1                keep the state directory (database, log) after the run
#   RESULTS_FILE=...      also append the summary rows (TSV) to this file
#
# Everything talks to 127.0.0.1 only, and every wait is bounded.

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

DURATION=${DURATION:-20s}
CONNECTIONS=${CONNECTIONS:-"16 64"}
WRK_THREADS=${WRK_THREADS:-2}
WARMUP=${WARMUP:-2s}
SERVER_CPU=${SERVER_CPU:-0}
WRK_CPU=${WRK_CPU:-1}
FSYNC_SECONDS=${FSYNC_SECONDS:-3}
BENCH_DIR=${BENCH_DIR:-$ROOT/target/bench-tmp}
PAYLOAD=$ROOT/bench/payload-5-alerts.json
LUA=$ROOT/bench/webhook.lua

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------- tools
need_install=()
command -v wrk >/dev/null 2>&1 || need_install+=(wrk)
command -v taskset >/dev/null 2>&1 || need_install+=(util-linux)
command -v curl >/dev/null 2>&1 || need_install+=(curl)
command -v python3 >/dev/null 2>&1 || need_install+=(python3)
if ((${#need_install[@]})); then
    command -v apt-get >/dev/null 2>&1 || die "missing ${need_install[*]} and no apt-get to install them"
    SUDO=""
    [[ $(id -u) -eq 0 ]] || SUDO="sudo"
    log "installing ${need_install[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_install[@]}" >/dev/null
fi
ncpu=$(nproc --all)
((ncpu > SERVER_CPU && ncpu > WRK_CPU)) || die "need CPUs $SERVER_CPU and $WRK_CPU; this machine has $ncpu"
[[ -f $PAYLOAD && -f $LUA ]] || die "missing $PAYLOAD or $LUA"

# ---------------------------------------------------------------- binary, state directory
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"
bench_binary
bench_state webhook
cat >"$STATE/nightshift.toml" <<EOF
# Written by bench/webhook.sh. Production settings except the address and the state dir.
[server]
listen = "127.0.0.1:0"
# Room for every connection's request in one group commit (the default, 4096, is plenty).
commit_queue = 4096

[auth]
ingest_token_file = "$STATE/ingest_token"

[store]
dir = "$STATE/var"

[log]
format = "human"
level = "info"
EOF

# ---------------------------------------------------------------- machine facts
cpu_model=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
fs_line=$(df -T "$STATE" | awk 'NR == 2 {print $1 " " $2 " (mounted on " $7 ")"}')
log "machine: nproc=$(nproc) cpu='$cpu_model' fs=$fs_line kernel=$(uname -r)"
src_rev=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo '?')
git -C "$ROOT" diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || src_rev="$src_rev+dirty"
log "binary: $BIN ($("$BIN" --version 2>/dev/null || echo '?'); built $(date -u -r "$BIN" +%FT%TZ); source $src_rev)"
log "state dir: $STATE"

# ---------------------------------------------------------------- fsync probe
# Appends 4 KiB and fsyncs, like a WAL commit, in the state directory itself (same filesystem
# as the store), pinned to the wrk CPU so the server CPU stays idle. Also reports in-place
# overwrite + fdatasync, the cheaper case (no size/metadata change).
fsync_probe() {
    taskset -c "$WRK_CPU" python3 - "$STATE" "$FSYNC_SECONDS" <<'PY'
import os, sys, time
d, seconds = sys.argv[1], float(sys.argv[2])
block = os.urandom(4096)
def run(mode):
    path = os.path.join(d, "fsync-probe.%s" % mode)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    lat = []
    try:
        if mode == "overwrite":
            os.write(fd, block); os.fsync(fd)
        end = time.monotonic() + seconds
        while time.monotonic() < end and len(lat) < 1_000_000:
            if mode == "overwrite":
                os.pwrite(fd, block, 0)
            else:
                os.write(fd, block)
            t = time.perf_counter()
            (os.fdatasync if mode == "overwrite" else os.fsync)(fd)
            lat.append(time.perf_counter() - t)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    total = sum(lat)
    n = len(lat)
    # Rate over the time spent in fsync alone (the write(2) to page cache is excluded).
    return n, n / total, total / n * 1e3, lat[n // 2] * 1e3, lat[min(n - 1, int(n * 0.99))] * 1e3
a = run("append")
o = run("overwrite")
print("FSYNC append_n=%d append_rate=%.0f append_mean_ms=%.3f append_p50_ms=%.3f append_p99_ms=%.3f "
      "overwrite_n=%d overwrite_rate=%.0f overwrite_mean_ms=%.3f overwrite_p50_ms=%.3f overwrite_p99_ms=%.3f" % (a + o))
PY
}

kv() { # kv KEY "LINE": value of KEY=... in a line of key=value words
    local key=$1 line=$2 word
    for word in $line; do
        if [[ $word == "$key="* ]]; then
            printf '%s' "${word#*=}"
            return 0
        fi
    done
    printf 'NA'
}

log "fsync probe: ${FSYNC_SECONDS}s append+fsync, then ${FSYNC_SECONDS}s overwrite+fdatasync, 4 KiB, in $STATE"
FSYNC_LINE=$(fsync_probe)
FSYNC_RATE=$(kv append_rate "$FSYNC_LINE")
FSYNC_MEAN=$(kv append_mean_ms "$FSYNC_LINE")
printf 'fsync (4 KiB append + fsync):       %s fsyncs/s, mean %s ms, p50 %s ms, p99 %s ms (%s samples)\n' \
    "$FSYNC_RATE" "$FSYNC_MEAN" "$(kv append_p50_ms "$FSYNC_LINE")" "$(kv append_p99_ms "$FSYNC_LINE")" "$(kv append_n "$FSYNC_LINE")"
printf 'fsync (4 KiB overwrite + fdatasync): %s fsyncs/s, mean %s ms, p50 %s ms, p99 %s ms (%s samples)\n' \
    "$(kv overwrite_rate "$FSYNC_LINE")" "$(kv overwrite_mean_ms "$FSYNC_LINE")" "$(kv overwrite_p50_ms "$FSYNC_LINE")" \
    "$(kv overwrite_p99_ms "$FSYNC_LINE")" "$(kv overwrite_n "$FSYNC_LINE")"

# ---------------------------------------------------------------- start nightshift
log "starting nightshift pinned to CPU $SERVER_CPU"
taskset -c "$SERVER_CPU" "$BIN" --config "$STATE/nightshift.toml" run >"$STATE/nightshift.log" 2>&1 &
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

# Production auth is on: an unauthenticated webhook must be refused.
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H 'Content-Type: application/json' \
    --data-binary "@$PAYLOAD" "$URL/webhook")
[[ $code == 401 ]] || die "expected 401 without a token, got $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 -X POST -H 'Content-Type: application/json' \
    -H "Authorization: Bearer $TOKEN" --data-binary "@$PAYLOAD" "$URL/webhook")
[[ $code == 200 ]] || die "expected 200 with the token, got $code"

# ---------------------------------------------------------------- helpers for a run
scrape() { curl -sf --max-time 5 "$URL/metrics"; }

# metric NAME[{labels}] FILE: the sample's value, 0 when absent
metric() {
    awk -v want="$1" '$1 == want {print $2; found = 1; exit} END {if (!found) print 0}' "$2"
}

# CPU ticks: whole process, then each thread (tid name ticks), then cpuN busy/total from /proc/stat
cpu_snapshot() {
    local out=$1 t
    : >"$out"
    awk '{print "proc", $14 + $15}' "/proc/$PID/stat" >>"$out" 2>/dev/null || true
    for t in /proc/"$PID"/task/*; do
        [[ -r $t/stat ]] || continue
        # comm may hold spaces; fields after the closing parenthesis are fixed.
        local stat name rest
        stat=$(cat "$t/stat" 2>/dev/null) || continue
        name=${stat#*(}; name=${name%%)*}; rest=${stat##*) }
        set -- $rest
        # after "comm)": $1=state ... utime is field 14 overall = $12 here, stime $13
        printf 'thread %s %s %s\n' "${t##*/}" "${name// /_}" "$((${12} + ${13}))" >>"$out"
    done
    awk -v a="cpu$SERVER_CPU" -v b="cpu$WRK_CPU" '$1 == a || $1 == b {
        total = 0; for (i = 2; i <= NF; i++) total += $i
        idle = $5 + $6
        print "core", $1, total - idle, total, $7 + $8
    }' /proc/stat >>"$out"
}

# CPU seconds (user + system) used so far by this shell's finished children (wrk among them)
# (times must run in this shell, not in a $(...) subshell: call it plainly, read CHILDREN_CPU.)
children_cpu() {
    times >"$STATE/times.txt"
    CHILDREN_CPU=$(awk 'NR == 2 {
        total = 0
        for (i = 1; i <= 2; i++) { split($i, p, "m"); sub("s", "", p[2]); total += p[1] * 60 + p[2] }
        printf "%.3f", total
    }' "$STATE/times.txt")
}

# cpu_report BEFORE AFTER SECONDS WRK_CPU_SECONDS: CPU use of nightshift, its busiest threads,
# both cores, and what nothing of ours used (other processes; kernel softirq time).
cpu_report() {
    python3 - "$1" "$2" "$3" "$(getconf CLK_TCK)" "$4" <<'PY'
import sys
before, after, secs, hz = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
wrk_secs = float(sys.argv[5])
def load(p):
    proc, threads, cores = 0, {}, {}
    for line in open(p):
        f = line.split()
        if f[0] == "proc": proc = int(f[1])
        elif f[0] == "thread": threads[(f[1], f[2])] = int(f[3])
        elif f[0] == "core": cores[f[1]] = (int(f[2]), int(f[3]), int(f[4]))
    return proc, threads, cores
p0, t0, c0 = load(before); p1, t1, c1 = load(after)
ns_secs = (p1 - p0) / hz
print("CPU nightshift=%.0f%% wrk=%.0f%%" % (ns_secs / secs * 100, wrk_secs / secs * 100), end="")
busy_secs = 0.0
for core in sorted(c1):
    if core in c0:
        busy = c1[core][0] - c0[core][0]; total = c1[core][1] - c0[core][1]; irq = c1[core][2] - c0[core][2]
        busy_secs += busy / hz
        print(" %s_busy=%.0f%% %s_irq=%.0f%%" % (core, 100.0 * busy / max(total, 1), core, 100.0 * irq / max(total, 1)), end="")
# Busy time of both cores not charged to nightshift or wrk: other processes (e.g. a build
# running meanwhile) plus interrupt time. Above ~20% the run was disturbed.
print(" unattributed=%.0f%%" % (max(0.0, busy_secs - ns_secs - wrk_secs) / secs * 100))
rows = sorted(((t1[k] - t0.get(k, 0), k) for k in t1), reverse=True)[:5]
print("  busiest threads: " + ", ".join("%s/%s %.0f%%" % (k[1], k[0], d / hz / secs * 100) for d, k in rows if d > 0))
PY
}

wait_reconciled() { # bounded wait until the reconcile backlog is drained (60 s)
    local i n
    for ((i = 0; i < 120; i++)); do
        n=$(scrape | awk '$1 == "nightshift_notifications_unreconciled" {print $2}')
        [[ ${n:-1} == 0 ]] && return 0
        sleep 0.5
    done
    log "reconcile backlog still at $n after 60 s"
}

calc() { awk "BEGIN { x = ($1); printf \"%.6f\", x }"; } # calc EXPR: floating-point arithmetic

duration_seconds() { # 20s / 1m / 30 -> seconds
    local d=$1
    case $d in
        *ms) calc "${d%ms} / 1000" ;;
        *s) echo "${d%s}" ;;
        *m) echo $((${d%m} * 60)) ;;
        *h) echo $((${d%h} * 3600)) ;;
        *) echo "$d" ;;
    esac
}

export BENCH_PAYLOAD=$PAYLOAD BENCH_TOKEN=$TOKEN

run_wrk() { # run_wrk CONNECTIONS DURATION OUTFILE
    local threads=$WRK_THREADS
    ((threads > $1)) && threads=$1
    taskset -c "$WRK_CPU" wrk -t"$threads" -c"$1" -d"$2" --latency -s "$LUA" "$URL/webhook" >"$3" 2>&1
}

if [[ $WARMUP != 0 ]]; then
    log "warm-up: $WARMUP at 16 connections"
    run_wrk 16 "$WARMUP" "$STATE/wrk-warmup.txt" || { cat "$STATE/wrk-warmup.txt" >&2; die "wrk warm-up failed"; }
    wait_reconciled
fi

# ---------------------------------------------------------------- measured runs
declare -a ROWS=()
all_ok=1
for c in $CONNECTIONS; do
    printf '\n=== %s connections, %s, wrk -t%s pinned to CPU %s; nightshift on CPU %s ===\n' \
        "$c" "$DURATION" "$WRK_THREADS" "$WRK_CPU" "$SERVER_CPU"
    scrape >"$STATE/metrics-before-$c.txt"
    cpu_snapshot "$STATE/cpu-before-$c.txt"
    start_ns=$(date +%s%N)
    # A CPU sample half-way through, for the record (top's view of nightshift's threads).
    half=$(duration_seconds "$DURATION")
    (sleep "$(calc "$half / 2")"; top -b -H -n1 -p "$PID" 2>/dev/null | head -n 14 >"$STATE/top-$c.txt" || true) &
    top_pid=$!
    children_cpu; wrk_cpu0=$CHILDREN_CPU
    run_wrk "$c" "$DURATION" "$STATE/wrk-$c.txt" || { cat "$STATE/wrk-$c.txt"; die "wrk failed"; }
    children_cpu; wrk_cpu1=$CHILDREN_CPU
    end_ns=$(date +%s%N)
    cpu_snapshot "$STATE/cpu-after-$c.txt"
    scrape >"$STATE/metrics-after-$c.txt"
    wait "$top_pid" 2>/dev/null || true
    cat "$STATE/wrk-$c.txt"

    result=$(grep '^BENCH_RESULT' "$STATE/wrk-$c.txt" || true)
    [[ -n $result ]] || die "no BENCH_RESULT line from wrk"
    rps=$(kv rps "$result"); p50=$(kv p50_ms "$result"); p99=$(kv p99_ms "$result")
    p999=$(kv p999_ms "$result"); non2xx=$(kv non2xx "$result"); sockerr=$(kv socket_errors "$result")
    requests=$(kv requests "$result")

    b=$STATE/metrics-before-$c.txt a=$STATE/metrics-after-$c.txt
    read -r batch_sum batch_count commits accepted other_outcomes < <(python3 - "$b" "$a" <<'PY'
import sys
def load(p):
    m = {}
    for line in open(p):
        if line.startswith("#") or not line.strip(): continue
        k, v = line.rsplit(None, 1)
        m[k] = float(v)
    return m
b, a = load(sys.argv[1]), load(sys.argv[2])
d = lambda k: a.get(k, 0.0) - b.get(k, 0.0)
s, n = d("nightshift_store_commit_batch_size_sum"), d("nightshift_store_commit_batch_size_count")
acc = d('nightshift_webhook_requests_total{outcome="accepted"}')
others = ",".join("%s=%d" % (k.split('"')[1], d(k)) for k in sorted(a)
                  if k.startswith("nightshift_webhook_requests_total{") and "accepted" not in k and d(k))
print(int(s), int(n), int(n), int(acc), others or "none")
PY
)
    elapsed=$(calc "($end_ns - $start_ns) / 1000000000")
    mean_batch=$(printf '%.2f' "$(calc "$batch_count > 0 ? $batch_sum / $batch_count : 0")")
    commits_per_s=$(printf '%.0f' "$(calc "$commits / $elapsed")")
    ratio=$(printf '%.1f' "$(calc "$rps / $FSYNC_RATE")")
    echo "--- nightshift /metrics (delta over the run)"
    echo "nightshift_store_commit_batch_size: sum=$batch_sum count=$batch_count mean=$mean_batch (commits/s ~ $commits_per_s)"
    echo "nightshift_webhook_requests_total: accepted=$accepted others=$other_outcomes"
    grep -E '^nightshift_webhook_requests_total|^nightshift_notifications_unreconciled |^nightshift_store_commit_batch_size_(sum|count)' "$a" | sed 's/^/  cumulative: /'
    cpu_lines=$(cpu_report "$STATE/cpu-before-$c.txt" "$STATE/cpu-after-$c.txt" "$elapsed" \
        "$(calc "$wrk_cpu1 - $wrk_cpu0")")
    printf '%s\n' "$cpu_lines"
    cpu_first=$(head -n1 <<<"$cpu_lines")
    ns_cpu=$(kv nightshift "$cpu_first"); core_busy=$(kv "cpu${SERVER_CPU}_busy" "$cpu_first")
    other_cpu=$(kv unattributed "$cpu_first")
    if [[ -s $STATE/top-$c.txt ]]; then
        echo "  top -H mid-run:"; sed -n '7,14p' "$STATE/top-$c.txt" | sed 's/^/    /'
    fi
    if [[ $non2xx == 0 && $sockerr == 0 && $other_outcomes == none ]]; then
        echo "check: all $requests requests answered 2xx (server counted $accepted accepted; wrk's count excludes requests still in flight at the end)"
    else
        echo "check: FAILED: non-2xx=$non2xx socket errors=$sockerr other outcomes=$other_outcomes"
        all_ok=0
    fi
    ROWS+=("$c	$rps	$p50	$p99	$p999	$non2xx	$mean_batch	$commits_per_s	$FSYNC_RATE	$ratio	$ns_cpu	$core_busy	$other_cpu")
    wait_reconciled
done

# ---------------------------------------------------------------- summary
printf '\n=== summary (%s per run; fsync probe: %s fsyncs/s, mean %s ms) ===\n' "$DURATION" "$FSYNC_RATE" "$FSYNC_MEAN"
{
    printf 'conns\treq/s\tp50_ms\tp99_ms\tp99.9_ms\tnon2xx\tmean_batch\tcommits/s\tfsync/s\treq/s÷fsync/s\tnightshift_cpu\tcpu%s_busy\tunattributed_cpu\n' "$SERVER_CPU"
    for row in "${ROWS[@]}"; do printf '%s\n' "$row"; done
} | if command -v column >/dev/null 2>&1; then column -t -s $'\t'; else cat; fi
if [[ -n ${RESULTS_FILE:-} ]]; then
    for row in "${ROWS[@]}"; do printf '%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$DURATION" "$row"; done >>"$RESULTS_FILE"
fi

log "stopping nightshift (SIGTERM)"
stop_server
grep -E ' (WARN|ERROR) ' "$STATE/nightshift.log" | grep -v 'webhook refused' | head -n 5 || true
if ((all_ok)); then
    echo "result: every request was accepted (no non-2xx, no socket errors)"
else
    echo "result: some requests were NOT accepted (see above)"
    exit 2
fi
