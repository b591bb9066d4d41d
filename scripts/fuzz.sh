#!/usr/bin/env bash
# Coverage-guided fuzzing of the four parsers that read what others write, each for a fixed
# time: the webhook body, matchers, rule files and templates (fuzz/fuzz_targets/).
#
#   scripts/fuzz.sh [seconds-per-target] [target...]     (default: 60 s, all four targets)
#
# Installs cargo-fuzz when it is missing. The toolchain is stable, so nightly-only flags
# (the address sanitizer) are allowed with RUSTC_BOOTSTRAP=1; FUZZ_SANITIZER=none turns the
# sanitizer off. New inputs go to fuzz/work/corpus/TARGET (not committed), the seeds in
# fuzz/corpus/TARGET are only read. A crash, a timeout (more than FUZZ_TIMEOUT seconds for
# one input, default 10) or an input that takes more than FUZZ_RSS_MB of memory (default 2048)
# is saved under fuzz/artifacts/TARGET/ and makes the script exit 1 after the other targets
# have run; minimise one with
#   RUSTC_BOOTSTRAP=1 cargo fuzz tmin -a TARGET fuzz/artifacts/TARGET/crash-...
# (from fuzz/), fix it, and keep it as a regression test in tests/it/properties.rs.
set -euo pipefail

seconds="${1:-60}"
shift || true
targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    targets=(webhook_parse matcher_parse rule_load template_render)
fi
sanitizer="${FUZZ_SANITIZER:-address}"
timeout_seconds="${FUZZ_TIMEOUT:-10}"
rss_mb="${FUZZ_RSS_MB:-2048}"

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz="$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

# Start from the root's resolved versions, so the fuzzed code is the code that ships.
if [ ! -f "$fuzz/Cargo.lock" ]; then
    cp "$root/Cargo.lock" "$fuzz/Cargo.lock"
fi

cd "$fuzz"
echo "building the fuzz targets (sanitizer: $sanitizer, debug assertions on)"
cargo fuzz build --sanitizer "$sanitizer" --debug-assertions
# Run what was just built, rather than `cargo fuzz run`, which builds again whenever a source
# file changed in the meantime.
binaries="$fuzz/target/$(rustc -vV | sed -n 's/^host: //p')/release"

failed=()
summary=()
for target in "${targets[@]}"; do
    work="$fuzz/work/corpus/$target"
    log="$fuzz/work/$target.log"
    mkdir -p "$work" "$fuzz/artifacts/$target"
    echo "fuzzing $target for ${seconds}s (log: $log)"
    dictionary=()
    if [ -f "$fuzz/dict/$target.dict" ]; then
        dictionary=("-dict=$fuzz/dict/$target.dict")
    fi
    status=0
    # stdin is closed so that nothing a target reads (a rule file's payload = "/dev/stdin")
    # can wait on the terminal.
    "$binaries/$target" -artifact_prefix="$fuzz/artifacts/$target/" \
        -max_total_time="$seconds" -timeout="$timeout_seconds" -rss_limit_mb="$rss_mb" \
        -print_final_stats=1 "${dictionary[@]}" "$work" "$fuzz/corpus/$target" \
        </dev/null >"$log" 2>&1 || status=$?
    executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    # libFuzzer's last status line: coverage and the corpus it kept (inputs/size).
    coverage="$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | cut -d' ' -f2)"
    corpus="$(grep -oE 'corp: [0-9]+/[0-9]+[a-zA-Z]*' "$log" | tail -1 | cut -d' ' -f2)"
    artifacts="$(find "$fuzz/artifacts/$target" -type f | wc -l)"
    line="$target: ${seconds}s, ${executions:-?} executions, coverage ${coverage:-?}"
    line+=", corpus ${corpus:-?}, artifacts $artifacts, exit $status"
    summary+=("$line")
    echo "  $line"
    if [ "$status" -ne 0 ]; then
        failed+=("$target")
        grep -E '^(==[0-9]+== ?ERROR|SUMMARY|thread .* panicked|ALARM|artifact_prefix|Test unit written)' \
            "$log" | head -20 || true
    fi
done

echo
echo "summary"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "FAILED: ${failed[*]}; inputs in $fuzz/artifacts/<target>/, logs in $fuzz/work/"
    exit 1
fi
echo "no crash; new corpus inputs in $fuzz/work/corpus/, artifacts (none) in $fuzz/artifacts/"
