#!/usr/bin/env bash
# Builds a tiny rootfs from Debian's busybox-static package, for fast container tests.
# Cached: a second run only prints the path. Usage: make-busybox-rootfs.sh [CACHE_DIR]
# Prints the rootfs directory on the last line of stdout.
set -euo pipefail

cache="${1:-${DIEGO_ROOTFS_CACHE:-/var/cache/diego/rootfs}}"
dest="$cache/busybox"
marker="$dest/.diego-rootfs-ok"

if [[ -f "$marker" ]]; then
    echo "$dest"
    exit 0
fi

if ! command -v busybox >/dev/null 2>&1 || ! busybox --list-full >/dev/null 2>&1; then
    echo "installing busybox-static from apt" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >&2
fi
bb="$(command -v busybox)"
if [[ "$(ldd "$bb" 2>&1 || true)" != *"not a dynamic executable"* ]]; then
    echo "warning: $bb does not look static (is busybox-static installed?)" >&2
fi

mkdir -p "$cache"
tmp="$(mktemp -d "$cache/.busybox.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

mkdir -p "$tmp"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,home/vcap,var/tmp}
chmod 1777 "$tmp/tmp" "$tmp/var/tmp"
cp "$bb" "$tmp/bin/busybox"
for applet in $("$bb" --list-full); do
    [[ -e "$tmp/$applet" ]] || ln -s /bin/busybox "$tmp/$applet"
done
cat > "$tmp/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/bin/sh
vcap:x:2000:2000:vcap:/home/vcap:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
PASSWD
cat > "$tmp/etc/group" <<'GROUP'
root:x:0:
vcap:x:2000:
nogroup:x:65534:
GROUP
chown 2000:2000 "$tmp/home/vcap"
touch "$tmp/.diego-rootfs-ok"

rm -rf "$dest"
mv "$tmp" "$dest"
trap - EXIT
echo "$dest"
