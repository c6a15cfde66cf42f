#!/usr/bin/env bash
# Builds the pinned test control plane (etcd, kube-apiserver, kube-controller-manager) from the
# Go modules in testenv/ into a cache outside the repository, once; later calls reuse it.
# The last line printed is the directory that holds the binaries; the tests find it with
# `scripts/testenv.sh --print-dir` (or read L3_TESTENV_DIR).
set -euo pipefail
cd "$(dirname "$0")/../testenv"

command -v go >/dev/null || { echo "testenv: Go is required (1.25 or later) to build the control plane" >&2; exit 1; }

k8s=$(awk '$1 == "k8s.io/kubernetes" && NF >= 2 {print $2; exit}' go.mod)
etcd=$(awk '$1 == "go.etcd.io/etcd/server/v3" && NF >= 2 {print $2; exit}' go.mod)
# The key covers go.mod and go.sum, so a bump of any pinned module builds into a new directory.
key=$(cat go.mod go.sum | sha256sum | cut -c1-12)
dir="${L3_TESTENV_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/l3/testenv/k8s-${k8s}-etcd-${etcd}-${key}}"
bins=(kube-apiserver kube-controller-manager etcd)
# The Gateway API CRDs, pinned in gateway-api/go.mod (a module of its own, so that the pin does
# not move the control plane's dependencies), are copied next to the binaries.
gwapi=$(awk '$1 == "require" && $2 == "sigs.k8s.io/gateway-api" {print $3; exit}' gateway-api/go.mod)
crds="$dir/gateway-api-${gwapi}"

# `--print-dir`: only say where the binaries are (or would be); the tests use this.
if [[ ${1:-} == --print-dir ]]; then
  echo "$dir"
  exit 0
fi
# `--print-gateway-crds`: where the Gateway API CRDs are (or would be).
if [[ ${1:-} == --print-gateway-crds ]]; then
  echo "$crds"
  exit 0
fi

# Copy the standard CRDs (HTTPRoute, GRPCRoute, ...) from the module cache; nothing downloaded
# is committed.
copy_gateway_crds() {
  [[ -f "$crds/gateway.networking.k8s.io_httproutes.yaml" ]] && return 0
  local src
  src=$(cd gateway-api && go mod download -json sigs.k8s.io/gateway-api | awk -F'"' '$2 == "Dir" {print $4}')
  [[ -d "$src/config/crd/standard" ]] || { echo "testenv: no config/crd/standard in sigs.k8s.io/gateway-api $gwapi ($src)" >&2; exit 1; }
  mkdir -p "$dir"
  local tmp
  tmp=$(mktemp -d "$dir/.crds.XXXXXX")
  cp "$src"/config/crd/standard/*.yaml "$tmp"/
  chmod u+w "$tmp"/*.yaml
  rm -rf "$crds"
  mv "$tmp" "$crds"
  echo "testenv: Gateway API $gwapi CRDs in $crds" >&2
}
copy_gateway_crds

have_all() {
  local b
  for b in "${bins[@]}"; do [[ -x "$dir/$b" ]] || return 1; done
}

if have_all; then
  echo "testenv: cached (kubernetes $k8s, etcd $etcd)" >&2
  echo "$dir"
  exit 0
fi

mkdir -p "$dir"
echo "testenv: building kubernetes $k8s and etcd $etcd into $dir (cold: about 10 minutes on 2 cores)" >&2
start=$SECONDS
# Binaries land in a temp dir first, so an interrupted build never leaves a half set behind.
tmp=$(mktemp -d "$dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
export CGO_ENABLED=0
echo "testenv: downloading modules" >&2
go mod download
# Stamp the Kubernetes version as the release build does: the apiserver reports it in /version
# and derives its emulation version from it.
minor=${k8s#v1.}; minor=${minor%%.*}
vpkg=k8s.io/component-base/version
ldflags="-X $vpkg.gitVersion=$k8s -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
i=0
for pkg in go.etcd.io/etcd/server/v3 k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager; do
  i=$((i + 1))
  out=${pkg##*/}
  [[ $out == v3 ]] && out=etcd
  echo "testenv: [$i/3] go build $pkg ($((SECONDS - start)) s so far)" >&2
  go build -trimpath -ldflags "-s -w $ldflags" -o "$tmp/$out" "$pkg"
done
mv "$tmp"/* "$dir"/
echo "testenv: built in $((SECONDS - start)) s" >&2
echo "$dir"
