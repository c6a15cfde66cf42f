#!/usr/bin/env bash
# `make image`: builds the l3 container image with Docker or Podman, whichever has a running
# engine. Without one it says so and exits 3 (it never pretends to have built anything).
# Usage: scripts/image.sh [image-ref]   (default ghcr.io/l3-dev/l3:dev)
set -euo pipefail
cd "$(dirname "$0")/.."

readonly IMAGE="${1:-ghcr.io/l3-dev/l3:dev}"
readonly NO_ENGINE=3

engine=""
for candidate in docker podman; do
  if command -v "$candidate" >/dev/null && "$candidate" info >/dev/null 2>&1; then
    engine="$candidate"
    break
  fi
done
if [[ -z "$engine" ]]; then
  echo "image: no running container engine (docker or podman) on this machine; nothing was built." >&2
  echo "image: install Docker (or Podman) and start it, then run \`make image\` again." >&2
  exit "$NO_ENGINE"
fi

echo "image: building $IMAGE with $engine" >&2
if [[ "$engine" == docker ]]; then
  DOCKER_BUILDKIT=1 docker build --tag "$IMAGE" .
else
  podman build --tag "$IMAGE" .
fi
echo "image: built $IMAGE" >&2
