#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets/*.rs), one after the other (the fuzzer takes a
# whole core), for FUZZ_SECS seconds each, or FUZZ_RUNS executions each when that is set. The
# committed seeds (fuzz/corpus/<target>/) are read but never written: what the fuzzer learns
# goes to fuzz/work/<target>/ (ignored by git); crashes to fuzz/artifacts/<target>/. Prints the
# executions per target; fails if any target crashed. cargo-fuzz needs nightly compiler flags:
# they are enabled on the default (stable) toolchain with RUSTC_BOOTSTRAP=1, since rustup may
# not be able to download a nightly here; FUZZ_TOOLCHAIN picks another toolchain (`+name`).
# FUZZ_SANITIZER defaults to none: the parsers are safe Rust, where AddressSanitizer finds
# nothing and halves the speed.
set -euo pipefail
cd "$(dirname "$0")/.."

secs=${FUZZ_SECS:-60}
runs=${FUZZ_RUNS:-}
sanitizer=${FUZZ_SANITIZER:-none}
toolchain=${FUZZ_TOOLCHAIN:-}
tools=${XDG_CACHE_HOME:-$HOME/.cache}/l3/tools
export PATH="$tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1
plus=()
[[ -n "$toolchain" ]] && plus=("+$toolchain")
command -v cargo-fuzz >/dev/null || { echo "fuzz: cargo-fuzz missing (make tools-fuzz installs it into $tools)" >&2; exit 1; }

mapfile -t targets < <(if [[ -n "${FUZZ_TARGETS:-}" ]]; then tr ' ' '\n' <<<"$FUZZ_TARGETS"; else
  for f in fuzz/fuzz_targets/*.rs; do basename "$f" .rs; done; fi)
limit=("-max_total_time=$secs")
budget="$secs s"
if [[ -n "$runs" ]]; then
  limit=("-runs=$runs")
  budget="$runs runs"
fi

cargo "${plus[@]}" fuzz build --sanitizer "$sanitizer"
failed=()
summary=()
for t in "${targets[@]}"; do
  mkdir -p "fuzz/work/$t" "fuzz/artifacts/$t"
  log=$(mktemp)
  echo "fuzz: $t ($budget)"
  start=$SECONDS
  if cargo "${plus[@]}" fuzz run --sanitizer "$sanitizer" "$t" "fuzz/work/$t" "fuzz/corpus/$t" -- \
      "${limit[@]}" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=CRASH
    failed+=("$t")
    tail -40 "$log"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  summary+=("$(printf '%-18s %12s executions %6d s  %s' "$t" "${execs:-?}" $((SECONDS - start)) "$status")")
  rm -f "$log"
done
printf '%s\n' "${summary[@]}"
if ((${#failed[@]})); then
  echo "fuzz: crashes in ${failed[*]}; inputs in fuzz/artifacts/<target>/ (fix, then add them to fuzz/corpus/<target>/)" >&2
  exit 1
fi
