#!/usr/bin/env bash
# Fuzz the Rust core for SECONDS (default 600), split evenly between the two
# harnesses of src/fuzz_model.rs:
#   model    random operation sequences against a HashMap model
#   corrupt  damage a live segment's shards, then operate and verify
#
# With cargo-fuzz and a nightly toolchain (rustup `nightly`, or stable with
# RUSTC_BOOTSTRAP=1), each runs under libFuzzer with AddressSanitizer
# (`cargo fuzz run`, corpus in fuzz/corpus/, crashes in fuzz/artifacts/).
# Otherwise the same harnesses run as a long randomized `cargo test`
# (SHMCACHE_FUZZ_SECONDS, a fresh SHMCACHE_FUZZ_SEED) with overflow checks.
# FUZZ_MODE=libfuzzer|test forces one. Exit status: non-zero on any failure.
#
#   usage: tools/fuzz.sh [SECONDS]        (make fuzz = tools/fuzz.sh 600)
set -uo pipefail

SECONDS_TOTAL=${1:-600}
case $SECONDS_TOTAL in '' | *[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;; esac
HALF=$(( SECONDS_TOTAL / 2 > 0 ? SECONDS_TOTAL / 2 : 1 ))
cd "$(dirname "$0")/.."
LOG_DIR=$(mktemp -d "${TMPDIR:-/tmp}/shmcache-fuzz.XXXXXX")
TARGETS=(model corrupt)

# How to call cargo-fuzz, if at all.
FUZZ=()
if [[ ${FUZZ_MODE:-} != test ]] && cargo fuzz --version >/dev/null 2>&1; then
    if rustup run nightly rustc --version >/dev/null 2>&1; then
        FUZZ=(cargo +nightly fuzz)
    elif RUSTC_BOOTSTRAP=1 cargo fuzz build --help >/dev/null 2>&1; then
        FUZZ=(env RUSTC_BOOTSTRAP=1 cargo fuzz)
    fi
fi
if [[ ${FUZZ_MODE:-} == libfuzzer && ${#FUZZ[@]} -eq 0 ]]; then
    echo "fuzz: FUZZ_MODE=libfuzzer but cargo-fuzz or a nightly toolchain is missing" >&2
    echo "      (cargo install cargo-fuzz; rustup toolchain install nightly)" >&2
    exit 2
fi

declare -A RESULT
status=0

run_libfuzzer() {
    local t=$1 log="$LOG_DIR/$1.log"
    echo "== fuzz $t: cargo fuzz (libFuzzer + ASan), ${HALF}s"
    if ! "${FUZZ[@]}" build "$t" >"$log" 2>&1; then
        tail -30 "$log"
        RESULT[$t]="BUILD FAILED (log: $log)"
        return 1
    fi
    mkdir -p "fuzz/corpus/$t"
    # -timeout: an input running 20 s is a hang; ASan's quarantine needs RSS headroom.
    "${FUZZ[@]}" run "$t" "fuzz/corpus/$t" -- \
        -max_total_time="$HALF" -timeout=20 -rss_limit_mb=4096 -max_len=8192 \
        -print_final_stats=1 >>"$log" 2>&1
    local rc=$?
    local runs corpus
    runs=$(grep -o 'Done [0-9]* runs' "$log" | tail -1 | grep -o '[0-9]*')
    corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
    if [[ $rc -eq 0 ]]; then
        RESULT[$t]="ok: ${runs:-?} inputs in ${HALF}s, corpus $corpus inputs, no crash"
    else
        grep -E 'panicked|ERROR: AddressSanitizer|ERROR: libFuzzer|SUMMARY|Test unit written' "$log" | head -20
        RESULT[$t]="FAILED (exit $rc; log: $log; artifacts: fuzz/artifacts/$t/)"
        return 1
    fi
}

run_test() {
    local t=$1 log="$LOG_DIR/$1.log" name seed
    case $t in model) name=fuzz_model::tests::model_random_sequences ;; corrupt) name=fuzz_model::tests::corruption_random_damage ;; esac
    seed=$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')
    echo "== fuzz $t: randomized cargo test ($name), ${HALF}s, SHMCACHE_FUZZ_SEED=$seed"
    # Optimised, with overflow checks and debug assertions (as under cargo
    # fuzz); its own target dir so `make test`'s release build stays cached.
    SHMCACHE_FUZZ_SECONDS=$HALF SHMCACHE_FUZZ_SEED=$seed CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true \
        CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS=true CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/fuzz-test" \
        cargo test --release --lib "$name" -- --exact --nocapture >"$log" 2>&1
    local rc=$?
    grep -E '^fuzz_model:' "$log" | tail -3
    if [[ $rc -eq 0 ]]; then
        RESULT[$t]="ok: $(grep -oE '[0-9]+ (model|corruption) inputs' "$log" | tail -1) in ${HALF}s, seed $seed"
    else
        grep -E 'panicked|failed|error' "$log" | head -20
        RESULT[$t]="FAILED (exit $rc; log: $log; reproduce: SHMCACHE_FUZZ_SEED=$seed)"
        return 1
    fi
}

for t in "${TARGETS[@]}"; do
    if [[ ${#FUZZ[@]} -gt 0 ]]; then
        run_libfuzzer "$t" || status=1
    else
        run_test "$t" || status=1
    fi
done

echo
if [[ ${#FUZZ[@]} -gt 0 ]]; then mode="libFuzzer (${FUZZ[*]})"; else mode="randomized cargo test (no cargo-fuzz/nightly)"; fi
echo "fuzz summary: ${SECONDS_TOTAL}s, $mode; logs in $LOG_DIR"
for t in "${TARGETS[@]}"; do
    printf '  %-8s %s\n' "$t" "${RESULT[$t]}"
done
exit $status
