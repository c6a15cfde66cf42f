#!/usr/bin/env bash
# `make chart-lint`: helm lint and helm template of charts/l3 with the default values and with
# every optional feature on, then promtool check of the rendered alert rules.
set -euo pipefail
cd "$(dirname "$0")/.."

readonly HELM=.tools/bin/helm
readonly CHART=charts/l3
readonly ALL="$CHART/ci/all-features-values.yaml"

if [[ ! -x "$HELM" ]]; then
  echo "chart-lint: $HELM is missing; run \`make tools-helm\`" >&2
  exit 1
fi

"$HELM" lint --strict "$CHART"
"$HELM" lint --strict "$CHART" -f "$ALL"
"$HELM" template l3 "$CHART" --namespace l3-system --include-crds >/dev/null
"$HELM" template l3 "$CHART" --namespace l3-system --include-crds -f "$ALL" >/dev/null

# The values schema must refuse a misspelt key rather than silently ignore it.
if "$HELM" template l3 "$CHART" --set replicaCont=2 >/dev/null 2>&1; then
  echo "chart-lint: values.schema.json accepted an unknown key (replicaCont)" >&2
  exit 1
fi

if ! command -v promtool >/dev/null; then
  echo "chart-lint: promtool is missing (Debian package \`prometheus\`; .ci/run installs it)" >&2
  exit 1
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# A PrometheusRule's spec is a Prometheus rules file: keep what follows `spec:`, dedented.
"$HELM" template l3 "$CHART" --namespace l3-system -f "$ALL" \
  --show-only templates/prometheusrule.yaml \
  | awk 'found { sub(/^  /, ""); print } /^spec:/ { found = 1 }' >"$tmp/rules.yaml"
promtool check rules "$tmp/rules.yaml"
echo "chart-lint: ok"
