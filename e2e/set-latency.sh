#!/usr/bin/env bash
# Changes the demo server's added latency at run time, without a restart.
# Usage: e2e/set-latency.sh <kube-context> <milliseconds>
set -euo pipefail

if [[ $# -ne 2 || ! "$2" =~ ^[0-9]+$ ]]; then
  echo "usage: $0 <kube-context> <milliseconds>" >&2
  exit 2
fi
kubectl --context "$1" -n l3-demo exec deploy/demo -c server -- \
  sh -c "echo $2 > /var/run/demo/delay-ms.tmp && mv /var/run/demo/delay-ms.tmp /var/run/demo/delay-ms"
echo "demo server in $1 now adds $2 ms" >&2
