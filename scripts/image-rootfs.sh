#!/usr/bin/env bash
# The root filesystem of the l3 image, in one place: `make image` (scripts/image.sh, no engine)
# and the Dockerfile (with an engine) both build the image from exactly this tree.
#
#   /l3                                 the l3 binary, debug info stripped
#   /lib/x86_64-linux-gnu/*.so*         the shared libraries `ldd` names (glibc, libm, libgcc_s)
#   /lib64/ld-linux-x86-64.so.2         the binary's loader (its PT_INTERP)
#   /etc/ssl/certs/ca-certificates.crt  CA certificates (for an https Prometheus)
#   /etc/passwd, /etc/group             root and the image user l3, uid/gid 65532 (the chart's)
#   /etc/nsswitch.conf                  hosts: files dns
#   /tmp                                mode 1777
#
# Why glibc and its libraries rather than a static binary: the musl target cannot be installed on
# our build machines, and `crt-static` would be a second full release build next to the one
# `make demo` already needs (the image reuses it). Needs ldd, objcopy (binutils) and the Debian
# package ca-certificates.
#
# Usage: scripts/image-rootfs.sh BINARY DIR   (DIR must not exist yet)
set -euo pipefail

die() { echo "image-rootfs: $*" >&2; exit 1; }

(($# == 2)) || die "usage: scripts/image-rootfs.sh BINARY DIR"
readonly BINARY=$1 ROOTFS=$2
readonly USER_ID=65532
readonly CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt

[[ -x "$BINARY" ]] || die "$BINARY is not an executable (build it first: make release)"
[[ ! -e "$ROOTFS" ]] || die "$ROOTFS exists already"
[[ -s "$CA_BUNDLE" ]] || die "$CA_BUNDLE is missing (Debian package ca-certificates)"
command -v objcopy >/dev/null || die "objcopy is missing (Debian package binutils)"

mkdir -p "$ROOTFS/etc/ssl/certs" "$ROOTFS/tmp"
chmod 0755 "$ROOTFS"
chmod 1777 "$ROOTFS/tmp"

# The release profile keeps line tables for local profiling; the image does without.
objcopy --strip-debug "$BINARY" "$ROOTFS/l3"
chmod 0555 "$ROOTFS/l3"

# Its shared libraries and loader, at the paths the binary asks for. `ldd` prints
# "name => /path (addr)" for a library and "/path (addr)" for the loader; the vdso has no file.
mapfile -t libs < <(ldd "$BINARY" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}')
for lib in "${libs[@]}"; do
  mkdir -p "$ROOTFS$(dirname "$lib")"
  cp -L "$lib" "$ROOTFS$lib"
  chmod 0555 "$ROOTFS$lib"
done

cp -L "$CA_BUNDLE" "$ROOTFS/etc/ssl/certs/ca-certificates.crt"
cat >"$ROOTFS/etc/passwd" <<PASSWD
root:x:0:0:root:/root:/sbin/nologin
l3:x:$USER_ID:$USER_ID:l3:/nonexistent:/sbin/nologin
PASSWD
cat >"$ROOTFS/etc/group" <<GROUP
root:x:0:
l3:x:$USER_ID:
GROUP
echo "hosts: files dns" >"$ROOTFS/etc/nsswitch.conf"
chmod 0444 "$ROOTFS/etc/ssl/certs/ca-certificates.crt" "$ROOTFS/etc/passwd" "$ROOTFS/etc/group" \
  "$ROOTFS/etc/nsswitch.conf"
find "$ROOTFS" -type d ! -path "$ROOTFS/tmp" -exec chmod 0755 {} +
echo "image-rootfs: $ROOTFS: /l3 and ${#libs[@]} libraries (${libs[*]})" >&2
