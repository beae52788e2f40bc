#!/usr/bin/env bash
# A bounded fuzz run for CI: builds the targets and runs each for a fixed number of inputs.
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
runs=${PAYDVM_FUZZ_RUNS:-20000}
cargo fuzz build -s none -a
for target in ledger_replay ledger_tamper lnurl_guard; do
  echo "--- fuzz $target: $runs inputs"
  # A target may come with a libFuzzer dictionary (fuzz/<target>.dict).
  dict=()
  [ -f "$target.dict" ] && dict=(-dict="$target.dict")
  # pipefail: a crash in the fuzzer fails the script even though tail succeeds.
  cargo fuzz run "$target" -s none -a -- -runs="$runs" ${dict[@]+"${dict[@]}"} -print_final_stats=1 2>&1 | tail -n 25
done
