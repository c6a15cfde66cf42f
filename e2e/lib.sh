#!/usr/bin/env bash
# Helpers shared by the e2e scripts (sourced, not run).

# Exit code when the machine cannot run the e2e at all (no Docker engine, no kind): distinct from
# a failed assertion (1) so CI and people can tell "not run" from "broken".
# shellcheck disable=SC2034 # read by the scripts that source this file
readonly E2E_NOT_RUNNABLE=3

log() { printf '%s e2e: %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

# kubectl against one cluster context.
kc() {
  local ctx="$1"
  shift
  kubectl --context "$ctx" "$@"
}

# retry <seconds> <command...>: runs the command every 5 s until it succeeds or time runs out.
retry() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@"; do
    if ((SECONDS >= deadline)); then
      return 1
    fi
    sleep 5
  done
}

# weight_milli <quantity>: a TrafficSplit weight (int, or Quantity such as "500m" or "1") in
# milli-units, so v1alpha1 and v1alpha2 splits compare alike.
weight_milli() {
  local w="$1"
  case "$w" in
    *m) echo "${w%m}" ;;
    *[!0-9]* | '') die "unsupported TrafficSplit weight '$w' (expected an integer or <n>m)" ;;
    *) echo $((w * 1000)) ;;
  esac
}

# split_weights <context> <namespace> <name>: "backend=weight" lines of a TrafficSplit.
split_weights() {
  kc "$1" -n "$2" get trafficsplits.split.smi-spec.io "$3" \
    -o jsonpath='{range .spec.backends[*]}{.service}={.weight}{"\n"}{end}'
}

# share_permille <context> <namespace> <split> <backend>: the backend's share of the split in ‰.
share_permille() {
  local line name weight total=0 mine=""
  while IFS= read -r line; do
    [[ -z "$line" ]] && continue
    name="${line%%=*}"
    weight="$(weight_milli "${line#*=}")"
    total=$((total + weight))
    if [[ "$name" == "$4" ]]; then
      mine="$weight"
    fi
  done < <(split_weights "$1" "$2" "$3")
  [[ -n "$mine" ]] || die "backend $4 not in TrafficSplit $2/$3"
  ((total > 0)) || die "TrafficSplit $2/$3 has a zero total weight"
  echo $((mine * 1000 / total))
}
