#!/usr/bin/env bash
# A bounded fuzz run for CI: builds every target in one cargo invocation (the dependencies, cdk
# and nostr-sdk included, once), then runs each for a fixed number of inputs.
#
# PAYDVM_FUZZ_RUNS overrides the number of inputs for every target; by default each target gets
# the count in the table below (about 5-15 s each on 2 cores, a few seconds more starting from
# an empty corpus). The parser targets also read their seeds (fuzz/seeds/<target>, from the
# vectors and examples) and a dictionary when there is one (fuzz/<target>.dict).
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

# target:inputs
targets=(
  ledger_replay:20000
  ledger_tamper:20000
  lnurl_guard:20000
  nip90_request:10000
  zap_receipt:5000
  bolt11:20000
  nutzap:3000
  cashu_token:5000
  config:20000
  wallet_answers:20000
)

start=$SECONDS
cargo fuzz build -s none -a
echo "--- build: $((SECONDS - start)) s"
for entry in "${targets[@]}"; do
  target=${entry%%:*}
  runs=${PAYDVM_FUZZ_RUNS:-${entry##*:}}
  echo "--- fuzz $target: $runs inputs"
  mkdir -p "corpus/$target"
  extra=()
  [ -d "seeds/$target" ] && extra+=("seeds/$target")
  options=(-runs="$runs" -print_final_stats=1)
  [ -f "$target.dict" ] && options+=(-dict="$target.dict")
  t0=$SECONDS
  # pipefail: a crash in the fuzzer fails the script even though grep succeeds. libFuzzer's
  # progress lines (`#123 NEW ...`) are dropped; the panic message and the final stats stay.
  cargo fuzz run "$target" -s none -a "corpus/$target" ${extra[@]+"${extra[@]}"} -- "${options[@]}" 2>&1 \
    | grep -vE '^#[0-9]+'
  echo "--- $target: $((SECONDS - t0)) s"
done
echo "--- smoke run: $((SECONDS - start)) s in all"
