#!/usr/bin/env bash
# Runs the real-control-plane test binaries (tests/cluster_*.rs) in parallel: each starts its own
# control plane and runs its tests as threads (libtest), so the binaries do not share state. Their
# tests mostly wait on the API server and l3, which is why they run side by side even on 2 cores.
# Each binary's output is printed whole when it ends; the exit status is non-zero if any failed.
set -euo pipefail
cd "$(dirname "$0")/.."

threads=${CLUSTER_TEST_THREADS:-8}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

# Build once, then learn where cargo put each binary (compiler messages go to the terminal).
mapfile -t bins < <(cargo test --locked --no-run --test 'cluster_*' --message-format=json-render-diagnostics |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"].startswith("cluster_"):
        print(m["executable"])
')
if ((${#bins[@]} == 0)); then
  echo "cluster-tests: no tests/cluster_*.rs binary was built" >&2
  exit 1
fi

start=$SECONDS
declare -A pids=()
for b in "${bins[@]}"; do
  name=$(basename "$b"); name=${name%-*}
  echo "cluster-tests: starting $name" >&2
  "$b" --test-threads="$threads" --show-output >"$out/$name.log" 2>&1 &
  pids[$name]=$!
done

failed=()
for name in "${!pids[@]}"; do
  if ! wait "${pids[$name]}"; then
    failed+=("$name")
  fi
done
for name in "${!pids[@]}"; do
  echo "=== $name"
  # The operator's own JSON log lines are in each replica's log file; keep the output readable.
  grep -v '^{"timestamp"' "$out/$name.log" || true
done
echo "cluster-tests: ${#bins[@]} binaries in $((SECONDS - start)) s"
if ((${#failed[@]})); then
  echo "cluster-tests: FAILED: ${failed[*]}" >&2
  exit 1
fi
