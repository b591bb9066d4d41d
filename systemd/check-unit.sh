#!/bin/sh
# Checks systemd/nightshift.service with systemd-analyze:
#   1. "security --offline=true": overall exposure must be <= MAX_EXPOSURE (2.0);
#   2. "verify" on the unit as shipped: the only complaint allowed is that
#      /usr/bin/nightshift is not installed;
#   3. "verify" on a copy whose ExecStartPre/ExecStart run /bin/true with the
#      same arguments: no output at all.
# Exits 0 with a message when systemd-analyze is absent (non-systemd CI).
# Usage: systemd/check-unit.sh [path/to/nightshift.service]
set -u

if ! command -v systemd-analyze >/dev/null 2>&1; then
    echo "check-unit: systemd-analyze not found, skipping"
    exit 0
fi

here=$(cd "$(dirname "$0")" && pwd)
unit=${1:-$here/nightshift.service}
max_exposure=${MAX_EXPOSURE:-2.0}
binary=/usr/bin/nightshift
if [ ! -f "$unit" ]; then
    echo "check-unit: $unit: no such file" >&2
    exit 1
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT HUP INT TERM
fail=0

# Lines "verify" prints about other unit files installed on the host (CI
# images ship odd units) are reported but not counted against ours.
is_foreign() {
    case $1 in
        *nightshift*) return 1 ;;
        /*:[0-9]*:*) return 0 ;;
        *.service:* | *.socket:* | *.target:* | *.mount:* | *.timer:* | *.path:* | *.slice:* | *.scope:* | *.device:* | *.swap:* | *.automount:*) return 0 ;;
        *) return 1 ;;
    esac
}

# check_verify LABEL FILE ALLOWED_PATTERN: the output of verify on FILE may
# contain only lines matching ALLOWED_PATTERN (grep -E; empty = none allowed).
check_verify() {
    label=$1 file=$2 allowed=$3
    systemd-analyze verify --man=no "$file" >"$tmp/verify.out" 2>&1
    rc=$?
    bad=0
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        if [ -n "$allowed" ] && printf '%s\n' "$line" | grep -Eq -- "$allowed"; then
            echo "check-unit: verify ($label): expected: $line"
        elif is_foreign "$line"; then
            echo "check-unit: verify ($label): ignored, other unit: $line"
        else
            echo "check-unit: verify ($label): UNEXPECTED: $line" >&2
            bad=1
        fi
    done <"$tmp/verify.out"
    if [ "$rc" -ne 0 ] && [ -z "$allowed" ]; then
        echo "check-unit: verify ($label): exit status $rc" >&2
        bad=1
    fi
    if [ "$bad" -eq 0 ]; then
        echo "check-unit: verify ($label): ok"
    else
        fail=1
    fi
}

# 1. Exposure score.
if systemd-analyze --help 2>/dev/null | grep -q -- '--offline'; then
    systemd-analyze security --offline=true --no-pager "$unit" >"$tmp/security.out" 2>&1
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9][0-9.]*\).*/\1/p' "$tmp/security.out" | tail -n 1)
    if [ -z "$score" ]; then
        cat "$tmp/security.out" >&2
        echo "check-unit: security: could not read the exposure level" >&2
        fail=1
    elif awk -v s="$score" -v m="$max_exposure" 'BEGIN { exit !(s + 0 <= m + 0) }'; then
        echo "check-unit: security: exposure $score <= $max_exposure: ok"
    else
        grep '✗' "$tmp/security.out" >&2
        echo "check-unit: security: exposure $score > $max_exposure" >&2
        fail=1
    fi
else
    echo "check-unit: systemd-analyze has no --offline (systemd < 250), skipping the security score"
fi

# 2. The unit as shipped (the binary may or may not be installed here).
if [ -x "$binary" ]; then
    check_verify shipped "$unit" ""
else
    check_verify shipped "$unit" "Command $binary is not executable"
fi

# 3. A copy that runs /bin/true: must be spotless. The copy keeps the unit's
# file name, which verify requires to be a valid unit name.
mkdir "$tmp/unit"
sed "s#^\(ExecStart[A-Za-z]*=\)$binary #\1/bin/true #" "$unit" >"$tmp/unit/$(basename "$unit")"
if grep -q "$binary" "$tmp/unit/$(basename "$unit")"; then
    echo "check-unit: could not rewrite every $binary command line" >&2
    fail=1
fi
check_verify "ExecStart=/bin/true" "$tmp/unit/$(basename "$unit")" ""

if [ "$fail" -ne 0 ]; then
    echo "check-unit: FAILED" >&2
    exit 1
fi
echo "check-unit: all checks passed"
