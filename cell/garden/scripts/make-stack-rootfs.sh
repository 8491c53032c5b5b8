#!/usr/bin/env bash
# Builds the default stack rootfs that buildpack apps run on: Debian bookworm minbase plus
# bash, coreutils, curl, ca-certificates, python3 and the C runtime (libc6), with a `vcap`
# user (uid 2000) like cflinuxfs. Cached and idempotent: a second run only prints the path.
# Takes a few minutes the first time (debootstrap from the apt mirror configured on this host).
# Usage: make-stack-rootfs.sh [CACHE_DIR]   (default $DIEGO_ROOTFS_CACHE or /var/cache/diego/rootfs)
# Prints the rootfs directory on the last line of stdout.
set -euo pipefail

cache="${1:-${DIEGO_ROOTFS_CACHE:-/var/cache/diego/rootfs}}"
suite="${DIEGO_STACK_SUITE:-bookworm}"
dest="$cache/stack-$suite"
marker="$dest/.diego-rootfs-ok"
packages="bash,coreutils,curl,ca-certificates,python3,libc6,procps,netbase"

if [[ -f "$marker" ]]; then
    echo "$dest"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1; then
    echo "installing debootstrap from apt" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2
fi

# use the mirror this host's apt already uses
mirror="${DIEGO_DEBIAN_MIRROR:-}"
if [[ -z "$mirror" ]]; then
    mirror="$(grep -rhoE '^(URIs:|deb)[[:space:]]+[^[:space:]]+' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources /etc/apt/sources.list.d/*.list 2>/dev/null \
        | awk '{print $2}' | grep -v security | head -n1 || true)"
fi
mirror="${mirror:-http://deb.debian.org/debian}"

mkdir -p "$cache"
tmp="$cache/.stack-$suite.tmp"
rm -rf "$tmp"
trap 'rm -rf "$tmp"' EXIT
echo "debootstrap $suite minbase from $mirror into $tmp (this takes a few minutes)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$tmp" "$mirror" >&2

# a small, clean image: no apt lists or caches, a vcap user for apps
chroot "$tmp" /bin/sh -c 'getent group vcap >/dev/null || groupadd -g 2000 vcap;
    getent passwd vcap >/dev/null || useradd -m -u 2000 -g 2000 -s /bin/bash vcap' >&2
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/*
for bin in bash curl python3 update-ca-certificates; do
    if ! chroot "$tmp" /bin/sh -c "command -v $bin" >/dev/null; then
        echo "stack rootfs is missing $bin" >&2
        exit 1
    fi
done
touch "$tmp/.diego-rootfs-ok"

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest"
