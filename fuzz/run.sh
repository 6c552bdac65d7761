#!/usr/bin/env bash
# `make fuzz`: builds every cargo-fuzz target of fuzz/ and runs each for
# FUZZ_SECONDS (default 60) from its committed corpus, fuzz/corpus/<target>.
# New interesting inputs go to a scratch directory, not the repo; crashes go to
# fuzz/artifacts/<target>/ (gitignored). Prints one line per target; exits non-zero
# if any target crashed. Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
targets=${FUZZ_TARGETS:-"admission_review digest classify"}
cache=${SIGNOFF_CACHE:-$HOME/.cache/signoff}
# Sanitizer builds differ from the main ones: never share the main target dir.
# This checkout's own (hack/target-dir.sh), so two clones never share one.
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$(hack/target-dir.sh)/fuzz}
fuzz_root=$cache/cargo-fuzz
export PATH=$fuzz_root/bin:$PATH

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz into $fuzz_root (once)"
  cargo install --locked cargo-fuzz --root "$fuzz_root"
fi

echo "fuzz: building ${targets// /, } (nightly, AddressSanitizer; the first build takes ~10 minutes)"
nice -n 10 cargo +nightly fuzz build --fuzz-dir fuzz

scratch=$(mktemp -d "${TMPDIR:-/tmp}/signoff-fuzz.XXXXXX")
failed=0
for target in $targets; do
  mkdir -p "$scratch/$target" "fuzz/artifacts/$target"
  log=$scratch/$target.log
  # The scratch directory comes first: libFuzzer adds new inputs to the first one.
  if nice -n 10 cargo +nightly fuzz run --fuzz-dir fuzz "$target" "$scratch/$target" "fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1; then
    result=ok
  else
    result=CRASHED
    failed=1
  fi
  figure() { grep -m1 "^stat::$1:" "$log" | awk '{print $2}'; }
  echo "fuzz: $target: $result: $(figure number_of_executed_units) runs in ${seconds}s," \
    "$(figure average_exec_per_sec) exec/s, $(figure new_units_added) new inputs (in $scratch/$target)," \
    "peak RSS $(figure peak_rss_mb) MB"
  if [[ $result != ok ]]; then
    grep -E "panicked|ERROR: |SUMMARY|Test unit written" "$log" | head -20 || true
    echo "fuzz: full log: $log; reproduce with: cargo +nightly fuzz run --fuzz-dir fuzz $target <artifact>"
  fi
done
exit $failed
