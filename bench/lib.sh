# Shared by the benchmark scripts that start a release nightshift of their own (webhook.sh,
# backlog.sh): which binary, a temporary state directory with an ingest credential, and
# stopping the daemon and cleaning up on exit. Source it after setting ROOT, BENCH_DIR and
# defining log and die.
#
#   bench_binary          sets BIN: $NIGHTSHIFT_BIN, or target/release/nightshift (built if missing)
#   bench_state NAME      sets STATE (a new directory under $BENCH_DIR), TOKEN (its ingest
#                         credential, in $STATE/ingest_token) and PID=""; installs the traps
#                         that stop the daemon in $PID and remove $STATE on exit (kept with
#                         KEEP=1 or on failure)

bench_binary() {
    if [[ -n ${NIGHTSHIFT_BIN:-} ]]; then
        BIN=$NIGHTSHIFT_BIN
    else
        BIN=$ROOT/target/release/nightshift
        if [[ ! -x $BIN ]]; then
            log "building $BIN (cargo build --release)"
            cargo build --release --quiet
        fi
    fi
    [[ -x $BIN ]] || die "no executable at $BIN"
}

stop_server() {
    [[ -n $PID ]] || return 0
    if kill -0 "$PID" 2>/dev/null; then
        kill -TERM "$PID" 2>/dev/null || true
        local i
        for ((i = 0; i < 300; i++)); do # 30 s; the daemon's shutdown_timeout is 20 s
            kill -0 "$PID" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$PID" 2>/dev/null; then
            log "nightshift did not stop within 30 s of SIGTERM; sending SIGKILL"
            kill -KILL "$PID" 2>/dev/null || true
        fi
    fi
    wait "$PID" 2>/dev/null || true
    PID=""
}

bench_cleanup() {
    local rc=$?
    stop_server
    if [[ ${KEEP:-0} == 1 || $rc -ne 0 ]]; then
        log "state directory kept: $STATE"
    else
        rm -rf "$STATE"
    fi
    exit "$rc"
}

bench_state() {
    mkdir -p "$BENCH_DIR"
    STATE=$(mktemp -d "$BENCH_DIR/$1.XXXXXX")
    PID=""
    trap bench_cleanup EXIT
    trap 'exit 130' INT TERM
    TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')
    umask 077
    printf '%s\n' "$TOKEN" >"$STATE/ingest_token"
    umask 022
    mkdir -p "$STATE/var"
}
