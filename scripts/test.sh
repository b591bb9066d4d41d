#!/usr/bin/env bash
# The whole test suite, on any Debian machine that has the Rust toolchain: installs what the
# suite needs when it is missing, then runs the same checks as CI (.ci/run calls this).
#
#   scripts/test.sh [cargo test arguments...]
#
# What the suite needs besides Rust, as Debian packages:
#   prometheus-alertmanager  the end-to-end tests run a real Alertmanager (two, clustered)
#   prometheus               a real Prometheus and promtool for the alerting rules
#   systemd                  systemd-analyze checks the unit
#   kubernetes-client        kubectl applies patches in the fake Kubernetes API server
#                            (skipped when any kubectl is already on PATH)
#   dpkg-dev                 dpkg-shlibdeps, which cargo-deb uses for the package's Depends
#   strace                   observes that a webhook's 200 is written only after the WAL's fsync
# and cargo-deb, installed with cargo (the package test runs `cargo deb`, then dpkg-deb).
# Installing needs root (or sudo); without either the missing packages are named and the
# script stops before running anything.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v prometheus-alertmanager >/dev/null 2>&1 || command -v alertmanager >/dev/null 2>&1 \
    || need+=(prometheus-alertmanager)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
command -v kubectl >/dev/null 2>&1 || need+=(kubernetes-client)
command -v dpkg-shlibdeps >/dev/null 2>&1 || need+=(dpkg-dev)
command -v strace >/dev/null 2>&1 || need+=(strace)
if [ ${#need[@]} -gt 0 ]; then
    echo "test.sh: installing ${need[*]}"
    if [ "$(id -u)" -eq 0 ]; then
        sudo=()
    elif command -v sudo >/dev/null 2>&1; then
        sudo=(sudo)
    else
        echo "test.sh: missing ${need[*]}; install them as root: apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need[@]}"
    # Debian starts the packaged Prometheus and Alertmanager as services; the tests start
    # their own on free ports and need neither.
    for service in prometheus prometheus-alertmanager; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$service" 2>/dev/null; then
            "${sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
        fi
    done
fi

if ! cargo deb --version >/dev/null 2>&1; then
    echo "test.sh: installing cargo-deb"
    cargo install cargo-deb --locked
fi

# CI's one-shot build gains nothing from incremental state, and it takes gigabytes of disk.
if [ "${CI:-}" = "true" ]; then
    export CARGO_INCREMENTAL=0
fi

cargo fmt --check
cargo clippy --all-targets -- -D warnings
# No two source files import each other in a circle (the stages stay a flow).
python3 scripts/import-cycles.py
sh systemd/check-unit.sh
cargo test "$@"
