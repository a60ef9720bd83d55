#!/usr/bin/env bash
# Fuzzes every decoder that reads untrusted bytes (fuzz/fuzz_targets/*) for a
# bounded time each, and prints executions and crashes per target.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]     (default 60 s, all targets)
#
# Not part of `cargo test`: it needs libFuzzer and sanitizer flags. On a stable
# toolchain RUSTC_BOOTSTRAP=1 unlocks the nightly flags cargo-fuzz passes.
# Corpora live in fuzz/corpus/<target> (the committed seed-* files plus what
# runs discover, which git ignores). A crash leaves its input in
# fuzz/artifacts/<target>/; reproduce it with
#   (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> artifacts/<target>/<file>)
# and turn it into a regression test in the crate that owns the decoder.
set -euo pipefail

secs="${1:-60}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root/fuzz"
export RUSTC_BOOTSTRAP=1

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (crates.io)" >&2
    cargo install cargo-fuzz --locked
fi

if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# fuzz/Cargo.lock is committed and CI checks that it is current: a run must
# never rewrite it. Refuse a stale lock up front (fix it in a commit with
# `cargo update --manifest-path fuzz/Cargo.toml --workspace`).
if ! cargo metadata --locked --format-version 1 >/dev/null; then
    echo "fuzz/Cargo.lock is stale; run: cargo update --manifest-path fuzz/Cargo.toml --workspace" >&2
    exit 1
fi

# Build once up front, so each target's time budget is spent fuzzing.
cargo fuzz build

failed=0
summary=()
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    log="$(mktemp)"
    # Crash files left by earlier runs are not this run's crashes: only files
    # newer than this marker count.
    since="$(mktemp)"
    echo "== $t: ${secs}s" >&2
    status=0
    cargo fuzz run "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    execs="$(awk '/stat::number_of_executed_units/ {print $2}' "$log" | tail -n1)"
    crashes="$(find "artifacts/$t" -type f -newer "$since" | wc -l)"
    old="$(find "artifacts/$t" -type f ! -newer "$since" | wc -l)"
    corpus="$(find "corpus/$t" -type f | wc -l)"
    line="$t: ${execs:-?} executions, $crashes new crash file(s) ($old from earlier runs), corpus $corpus, exit $status"
    summary+=("$line")
    if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        failed=1
        tail -n 40 "$log" >&2
    fi
    rm -f "$log" "$since"
done

printf '%s\n' "${summary[@]}"
exit "$failed"
