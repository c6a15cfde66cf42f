#!/usr/bin/env bash
# `make image`: assembles the l3 container image as an OCI image archive, without a container
# engine, with umoci (Debian package `umoci`; `make tools-image` installs it). umoci runs
# unprivileged (--rootless) when not root. One layer: scripts/image-rootfs.sh's tree, which the
# Dockerfile uses too.
#
# Config: entrypoint ["/l3"], cmd ["run"] (so `/l3 run`), user 65532:65532, ports 8080 and 8081,
# and the org.opencontainers.image.* labels. The Dockerfile builds the same layout with an engine.
#
# The repository name comes from ONE place, the chart's `image.repository` (charts/l3/values.yaml),
# so the chart's default image is the one the release workflow publishes.
#
# Usage: scripts/image.sh BINARY ARCHIVE      e.g. target/release/l3 target/image/l3-0.1.0.oci.tar
#        scripts/image.sh --repository        print the repository name and exit
set -euo pipefail
cd "$(dirname "$0")/.."

readonly VALUES=charts/l3/values.yaml
readonly USER_ID=65532  # the user scripts/image-rootfs.sh creates
readonly LICENSE=Apache-2.0

die() { echo "image: $*" >&2; exit 1; }

# image.repository from the chart's values: the first `repository:` inside the top-level `image:`.
repository() {
  awk '/^image:/ {in_image = 1; next} /^[^ #]/ {in_image = 0}
       in_image && $1 == "repository:" {print $2; exit}' "$VALUES"
}

if [[ "${1:-}" == --repository ]]; then
  repo=$(repository)
  [[ -n "$repo" ]] || die "no image.repository in $VALUES"
  echo "$repo"
  exit 0
fi

(($# == 2)) || die "usage: scripts/image.sh BINARY ARCHIVE (or --repository)"
readonly BINARY=$1 ARCHIVE=$2

command -v umoci >/dev/null || die "umoci is not installed (Debian package umoci; \`make tools-image\` installs it)"
[[ -x "$BINARY" ]] || die "$BINARY is not an executable (build it first: make release)"

REPO=$(repository)
[[ -n "$REPO" ]] || die "no image.repository in $VALUES"
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[[ -n "$VERSION" ]] || die "no version in Cargo.toml"
SOURCE=$(sed -n 's/^repository = "\(.*\)"$/\1/p' Cargo.toml | head -1)
[[ -n "$SOURCE" ]] || die "no repository in Cargo.toml"
# The commit the image is built from (marked -dirty with uncommitted changes), and its time as
# the image's creation time, so that the same commit gives the same labels.
if REVISION=$(git rev-parse HEAD 2>/dev/null); then
  git diff --quiet HEAD -- src Cargo.toml Cargo.lock 2>/dev/null || REVISION="$REVISION-dirty"
  EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct)}
else
  REVISION=unknown
  EPOCH=${SOURCE_DATE_EPOCH:-$(date +%s)}
fi
CREATED=$(date -u -d "@$EPOCH" +%Y-%m-%dT%H:%M:%SZ)

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
rootfs=$work/rootfs
scripts/image-rootfs.sh "$BINARY" "$rootfs"
# Same timestamps for the same commit.
find "$rootfs" -exec touch -h -d "@$EPOCH" {} +

# Not root: umoci unpacks with --rootless, and repack (which reads that from the bundle) maps
# the files to root:root in the layer; as root they are root's already.
rootless=()
[[ $(id -u) -eq 0 ]] || rootless=(--rootless)

layout=$work/layout
tag=$VERSION
umoci init --layout "$layout"
umoci new --image "$layout:$tag"
umoci unpack "${rootless[@]}" --image "$layout:$tag" "$work/bundle"
cp -a "$rootfs/." "$work/bundle/rootfs/"
umoci repack --image "$layout:$tag" \
  --history.created "$CREATED" --history.created_by "scripts/image.sh" \
  --history.comment "l3 $VERSION, its libraries, CA certificates, user l3 ($USER_ID)" \
  "$work/bundle"
labels=(
  "org.opencontainers.image.title=l3"
  "org.opencontainers.image.description=Latency-aware load balancing for multi-cluster Linkerd service meshes"
  "org.opencontainers.image.version=$VERSION"
  "org.opencontainers.image.revision=$REVISION"
  "org.opencontainers.image.source=$SOURCE"
  "org.opencontainers.image.url=$SOURCE"
  "org.opencontainers.image.licenses=$LICENSE"
  "org.opencontainers.image.created=$CREATED"
)
config=(
  --config.entrypoint /l3 --config.cmd run
  --config.user "$USER_ID:$USER_ID"
  --config.workingdir /
  --config.env PATH=/
  --config.env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  --config.exposedports 8080/tcp --config.exposedports 8081/tcp
  --os linux --architecture amd64
  --created "$CREATED" --author "$SOURCE"
  --history.created "$CREATED" --history.created_by "scripts/image.sh"
)
for l in "${labels[@]}"; do
  config+=(--config.label "$l" --manifest.annotation "$l")
done
umoci config --image "$layout:$tag" "${config[@]}"
umoci gc --layout "$layout"

# Name the image as engines expect it: containerd (kind, nerdctl) and docker load read
# io.containerd.image.name; skopeo and the OCI layout read the tag from ref.name.
python3 - "$layout/index.json" "$REPO:$VERSION" "$VERSION" <<'EOF'
import json, sys
path, name, tag = sys.argv[1:]
with open(path) as f:
    index = json.load(f)
for m in index["manifests"]:
    m.setdefault("annotations", {})
    m["annotations"]["io.containerd.image.name"] = name
    m["annotations"]["org.opencontainers.image.ref.name"] = tag
with open(path, "w") as f:
    json.dump(index, f, separators=(",", ":"), sort_keys=True)
EOF

mkdir -p "$(dirname "$ARCHIVE")"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$EPOCH" \
  -C "$layout" -cf "$ARCHIVE.tmp" oci-layout index.json blobs
mv "$ARCHIVE.tmp" "$ARCHIVE"
echo "image: $ARCHIVE ($REPO:$VERSION, $(du -h "$ARCHIVE" | cut -f1), revision $REVISION)" >&2
