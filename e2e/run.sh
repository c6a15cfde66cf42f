#!/usr/bin/env bash
# l3's real-cluster end-to-end test (`make e2e`).
#
# Two kind clusters, "east" (clients, TrafficSplit, l3) and "west", with Linkerd, the viz,
# multicluster and SMI extensions, linked so east mirrors west's demo service. A demo service
# runs one replica in each cluster; its latency can be changed at run time (e2e/set-latency.sh).
# The chart is installed from this checkout with an image built from it. Then:
#   1. a LatencyPolicy adopts the split and becomes Ready;
#   2. the east replica is slowed to L3_E2E_SLOW_MS; its share must fall below
#      L3_E2E_MAX_SHARE_PERMILLE within 60 s;
#   3. the policy is deleted; the original weights must return within 60 s.
#
# Needs: a running Docker engine, kind, curl, openssl (kubectl and helm come from
# `make tools-helm` when missing; the Linkerd CLI is downloaded into .tools/). Exits 3 with a
# message when the machine cannot run it, 1 when an assertion fails, 0 when everything passed.
#
# Environment:
#   L3_E2E_CONTEXTS   "client-ctx,remote-ctx": use two existing clusters instead of creating kind
#                     clusters (Linkerd, viz, multicluster and SMI are installed into them; their
#                     gateways need LoadBalancer addresses). Kind contexts still get the image loaded.
#   L3_E2E_IMAGE      l3 image to test (default: `make image` from this checkout, loaded into kind
#                     from target/image/l3-<version>.oci.tar).
#   L3_E2E_KEEP=1     keep the clusters afterwards.
#   L3_E2E_OUT        directory for diagnostics (default: a temp dir).
#   LINKERD_VERSION   Linkerd CLI/control plane (default stable-2.14.10, the last open-source
#                     stable with linkerd-smi support).
set -euo pipefail
# Failures inside $(...) must stop the run too (weights are read through command substitutions).
shopt -s inherit_errexit
cd "$(dirname "$0")/.."
# shellcheck source=e2e/lib.sh
source e2e/lib.sh

readonly LINKERD_VERSION="${LINKERD_VERSION:-stable-2.14.10}"
readonly LINKERD_SMI_CHART_VERSION="${LINKERD_SMI_CHART_VERSION:-}"
readonly PYTHON_IMAGE="${L3_E2E_PYTHON_IMAGE:-python:3.12-alpine}"
readonly SLOW_MS="${L3_E2E_SLOW_MS:-400}"
readonly MAX_SHARE_PERMILLE="${L3_E2E_MAX_SHARE_PERMILLE:-200}"
readonly REACT_SECONDS=60
readonly GATEWAY_NODE_PORT=30143
readonly PROBE_NODE_PORT=30191
readonly NS=l3-demo
readonly SPLIT=demo
OUT="${L3_E2E_OUT:-$(mktemp -d)}"
mkdir -p "$OUT"

CLIENT=east
REMOTE=west
CREATED_CLUSTERS=0
if [[ -n "${L3_E2E_CONTEXTS:-}" ]]; then
  IFS=, read -r CLIENT_CTX REMOTE_CTX <<<"$L3_E2E_CONTEXTS"
  [[ -n "${CLIENT_CTX:-}" && -n "${REMOTE_CTX:-}" ]] ||
    die "L3_E2E_CONTEXTS must be \"client-context,remote-context\""
else
  CLIENT_CTX="kind-l3-$CLIENT"
  REMOTE_CTX="kind-l3-$REMOTE"
fi

not_runnable() {
  log "cannot run here: $*"
  log "the e2e needs a machine with a running Docker engine and kind (see e2e/README.md); nothing was tested."
  exit "$E2E_NOT_RUNNABLE"
}

preflight() {
  command -v docker >/dev/null || not_runnable "docker is not installed"
  docker info >/dev/null 2>&1 || not_runnable "the Docker engine is not running (docker info failed)"
  if [[ -z "${L3_E2E_CONTEXTS:-}" ]]; then
    command -v kind >/dev/null || not_runnable "kind is not installed (https://kind.sigs.k8s.io)"
  fi
  local tool
  for tool in curl openssl; do
    command -v "$tool" >/dev/null || not_runnable "$tool is not installed"
  done
  scripts/tools-helm.sh
  export PATH="$PWD/.tools/bin:$PATH"
  command -v kubectl >/dev/null || die "kubectl missing even after make tools-helm"
}

linkerd_cli() {
  local dir=".tools/e2e/$LINKERD_VERSION"
  LINKERD="$dir/linkerd"
  if [[ ! -x "$LINKERD" ]]; then
    local arch
    case "$(uname -m)" in
      x86_64) arch=amd64 ;;
      aarch64 | arm64) arch=arm64 ;;
      *) not_runnable "no Linkerd CLI for $(uname -m)" ;;
    esac
    mkdir -p "$dir"
    log "downloading linkerd $LINKERD_VERSION"
    curl -fsSL -o "$LINKERD" \
      "https://github.com/linkerd/linkerd2/releases/download/$LINKERD_VERSION/linkerd2-cli-$LINKERD_VERSION-linux-$arch"
    chmod +x "$LINKERD"
  fi
}

node_ip() {
  docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$1-control-plane"
}

create_clusters() {
  [[ -n "${L3_E2E_CONTEXTS:-}" ]] && return
  local name
  for name in "l3-$CLIENT" "l3-$REMOTE"; do
    if kind get clusters 2>/dev/null | grep -qx "$name"; then
      log "reusing kind cluster $name"
    else
      log "creating kind cluster $name"
      kind create cluster --name "$name" --wait 180s
      CREATED_CLUSTERS=1
    fi
  done
}

make_certs() {
  # One trust anchor for both clusters: multicluster mTLS across the gateways needs it.
  local d="$OUT/certs"
  mkdir -p "$d"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/ca.key"
  openssl req -x509 -new -key "$d/ca.key" -sha256 -days 2 -subj "/CN=root.linkerd.cluster.local" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$d/ca.crt"
  openssl ecparam -name prime256v1 -genkey -noout -out "$d/issuer.key"
  openssl req -new -key "$d/issuer.key" -subj "/CN=identity.linkerd.cluster.local" -out "$d/issuer.csr"
  printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' >"$d/issuer.ext"
  openssl x509 -req -in "$d/issuer.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$d/issuer.ext" -out "$d/issuer.crt"
  CERTS="$d"
}

rollout() {
  local ctx="$1" ns="$2" d
  for d in $(kc "$ctx" -n "$ns" get deploy -o name); do
    kc "$ctx" -n "$ns" rollout status "$d" --timeout=300s
  done
}

install_linkerd() {
  local ctx="$1"
  log "installing Linkerd $LINKERD_VERSION into $ctx"
  "$LINKERD" --context "$ctx" install --crds | kc "$ctx" apply -f -
  "$LINKERD" --context "$ctx" install \
    --identity-trust-anchors-file "$CERTS/ca.crt" \
    --identity-issuer-certificate-file "$CERTS/issuer.crt" \
    --identity-issuer-key-file "$CERTS/issuer.key" | kc "$ctx" apply -f -
  rollout "$ctx" linkerd
  local mc_args=()
  if [[ -z "${L3_E2E_CONTEXTS:-}" ]]; then
    # kind has no load balancer: expose the gateway on fixed node ports of the docker network.
    mc_args=(--set gateway.serviceType=NodePort
      --set "gateway.nodePort=$GATEWAY_NODE_PORT"
      --set "gateway.probe.nodePort=$PROBE_NODE_PORT")
  fi
  "$LINKERD" --context "$ctx" multicluster install "${mc_args[@]}" | kc "$ctx" apply -f -
  rollout "$ctx" linkerd-multicluster
}

install_client_extensions() {
  log "installing viz and SMI into $CLIENT_CTX"
  "$LINKERD" --context "$CLIENT_CTX" viz install | kc "$CLIENT_CTX" apply -f -
  rollout "$CLIENT_CTX" linkerd-viz
  local version_args=()
  [[ -n "$LINKERD_SMI_CHART_VERSION" ]] && version_args=(--version "$LINKERD_SMI_CHART_VERSION")
  helm --kube-context "$CLIENT_CTX" upgrade --install linkerd-smi linkerd-smi \
    --repo https://linkerd.github.io/linkerd-smi "${version_args[@]}" \
    --namespace linkerd-smi --create-namespace --wait --timeout 5m
}

# The client cluster's service mirror probes the remote gateway; ALIVE turns True when it answers.
gateway_alive() {
  "$LINKERD" --context "$CLIENT_CTX" multicluster gateways 2>/dev/null |
    awk -v c="$REMOTE" '$1 == c && $2 == "True" { found = 1 } END { exit !found }'
}

link_clusters() {
  log "linking $REMOTE_CTX into $CLIENT_CTX"
  local link_args=(--cluster-name "$REMOTE")
  if [[ -z "${L3_E2E_CONTEXTS:-}" ]]; then
    local ip
    ip="$(node_ip "l3-$REMOTE")"
    [[ -n "$ip" ]] || die "no docker network address for l3-$REMOTE-control-plane"
    link_args+=(--api-server-address "https://$ip:6443"
      --gateway-addresses "$ip" --gateway-port "$GATEWAY_NODE_PORT")
  fi
  "$LINKERD" --context "$REMOTE_CTX" multicluster link "${link_args[@]}" | kc "$CLIENT_CTX" apply -f -
  retry 180 gateway_alive ||
    die "the $REMOTE gateway never became alive from $CLIENT ($LINKERD multicluster gateways)"
}

deploy_demo() {
  local ctx name
  for ctx in "$CLIENT_CTX" "$REMOTE_CTX"; do
    name="$CLIENT"
    [[ "$ctx" == "$REMOTE_CTX" ]] && name="$REMOTE"
    sed -e "s/__CLUSTER__/$name/g" -e "s|__PYTHON_IMAGE__|$PYTHON_IMAGE|g" e2e/manifests/demo-server.yaml |
      kc "$ctx" apply -f -
  done
  sed -e "s|__PYTHON_IMAGE__|$PYTHON_IMAGE|g" e2e/manifests/client.yaml | kc "$CLIENT_CTX" apply -f -
  rollout "$CLIENT_CTX" "$NS"
  rollout "$REMOTE_CTX" "$NS"
  retry 180 kc "$CLIENT_CTX" -n "$NS" get service "demo-$REMOTE" >/dev/null ||
    die "the mirror service demo-$REMOTE never appeared in $CLIENT"
  sed -e "s/__CLIENT__/$CLIENT/g" -e "s/__REMOTE__/$REMOTE/g" e2e/manifests/split.yaml |
    kc "$CLIENT_CTX" apply -f -
}

install_l3() {
  # Default: the image `make image` assembles (no engine needed), loaded into kind from its
  # archive; L3_E2E_IMAGE names an image the cluster can pull (or a local docker image for kind).
  local image="${L3_E2E_IMAGE:-}"
  if [[ -z "$image" ]]; then
    make --no-print-directory image
    image=$(make --no-print-directory -s image-name)
    [[ "$CLIENT_CTX" == kind-* ]] ||
      die "$CLIENT_CTX is not a kind context: push $image to a registry it can pull from and set L3_E2E_IMAGE"
    kind load image-archive "target/image/l3-${image##*:}.oci.tar" --name "${CLIENT_CTX#kind-}"
  elif [[ "$CLIENT_CTX" == kind-* ]] && docker image inspect "$image" >/dev/null 2>&1; then
    kind load docker-image "$image" --name "${CLIENT_CTX#kind-}"
  fi
  kc "$CLIENT_CTX" apply -f e2e/manifests/viz-allow-l3.yaml
  log "installing the chart from this checkout with $image"
  helm --kube-context "$CLIENT_CTX" upgrade --install l3 charts/l3 \
    --namespace l3-system --create-namespace \
    --set "image.repository=${image%:*}" --set "image.tag=${image##*:}" \
    --set image.pullPolicy=IfNotPresent \
    --set-string 'podAnnotations.linkerd\.io/inject=enabled' \
    --wait --timeout 5m
}

policy_ready() {
  [[ "$(kc "$CLIENT_CTX" -n "$NS" get latencypolicies.l3.dev demo \
    -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

normalised_weights() {
  local line
  split_weights "$CLIENT_CTX" "$NS" "$SPLIT" | sort | while IFS= read -r line; do
    if [[ -n "$line" ]]; then
      echo "${line%%=*}=$(weight_milli "${line#*=}")"
    fi
  done
}

weights_are() {
  [[ "$(normalised_weights)" == "$1" ]]
}

dump() {
  log "collecting diagnostics in $OUT"
  {
    kc "$CLIENT_CTX" -n "$NS" get latencypolicies.l3.dev -o yaml
    kc "$CLIENT_CTX" -n "$NS" get trafficsplits.split.smi-spec.io -o yaml
    kc "$CLIENT_CTX" -n "$NS" get events --sort-by=.lastTimestamp
  } >"$OUT/demo.txt" 2>&1 || true
  kc "$CLIENT_CTX" -n l3-system logs -l app.kubernetes.io/name=l3 -c l3 --tail=-1 --prefix \
    >"$OUT/l3.log" 2>&1 || true
  kc "$CLIENT_CTX" -n l3-system get pods,lease -o wide >"$OUT/l3-system.txt" 2>&1 || true
}

cleanup() {
  local rc=$?
  if ((rc != 0 && rc != E2E_NOT_RUNNABLE)); then
    dump
  fi
  if [[ "${L3_E2E_KEEP:-0}" != 1 && "$CREATED_CLUSTERS" == 1 ]]; then
    kind delete cluster --name "l3-$CLIENT" >/dev/null 2>&1 || true
    kind delete cluster --name "l3-$REMOTE" >/dev/null 2>&1 || true
  fi
  exit "$rc"
}

run_test() {
  local original baseline share elapsed start
  original="$(normalised_weights)"
  log "original weights: $(echo "$original" | tr '\n' ' ')"

  kc "$CLIENT_CTX" apply -f e2e/manifests/policy.yaml
  retry 120 policy_ready || die "LatencyPolicy $NS/demo did not become Ready within 120 s"
  log "policy Ready; letting the filters settle for 30 s"
  sleep 30
  baseline="$(share_permille "$CLIENT_CTX" "$NS" "$SPLIT" "demo-$CLIENT")"
  log "share of demo-$CLIENT before slowing it: ${baseline}‰"

  e2e/set-latency.sh "$CLIENT_CTX" "$SLOW_MS"
  start=$SECONDS
  while :; do
    share="$(share_permille "$CLIENT_CTX" "$NS" "$SPLIT" "demo-$CLIENT")"
    elapsed=$((SECONDS - start))
    if ((share < MAX_SHARE_PERMILLE && share < baseline)); then
      log "PASS: demo-$CLIENT's share fell from ${baseline}‰ to ${share}‰ in ${elapsed} s"
      break
    fi
    ((elapsed < REACT_SECONDS)) ||
      die "demo-$CLIENT's share is ${share}‰ ${elapsed} s after slowing it by ${SLOW_MS} ms (wanted < ${MAX_SHARE_PERMILLE}‰ within ${REACT_SECONDS} s)"
    sleep 5
  done

  kc "$CLIENT_CTX" delete -f e2e/manifests/policy.yaml --timeout=60s
  retry "$REACT_SECONDS" weights_are "$original" ||
    die "weights after deleting the policy: $(normalised_weights | tr '\n' ' '); wanted the original $(echo "$original" | tr '\n' ' ')"
  log "PASS: original weights restored after deleting the policy"
  e2e/set-latency.sh "$CLIENT_CTX" 5
}

main() {
  preflight
  trap cleanup EXIT
  linkerd_cli
  create_clusters
  make_certs
  install_linkerd "$CLIENT_CTX"
  install_linkerd "$REMOTE_CTX"
  install_client_extensions
  link_clusters
  deploy_demo
  install_l3
  run_test
  log "all e2e checks passed"
}

main "$@"
