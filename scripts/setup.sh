#!/usr/bin/env bash
# Installs what building and testing diego needs on a Debian machine, idempotently:
#   protobuf-compiler  protoc, for etcd-client's generated gRPC code
#   etcd-server        real etcd for the etcd store tests (the tests start it themselves)
#   curl               readiness checks in scripts
#   iptables           container networking: NAT and port mappings (cell/garden)
#   e2fsprogs          mkfs.ext4: a container's disk limit is a sparse ext4 image (cell/garden)
#   busybox-static     the tiny rootfs of the fast container tests
#   debootstrap        the stack rootfs buildpack apps run on (cell/garden/scripts)
#   runc crun          the baselines of the container benchmark
#   docker-registry    a real OCI registry for the image tests (started by the tests on loopback)
#   umoci skopeo       build the test images and push them to that registry
#   wrk                the load generator of the push benchmark (router against direct)
#   openssh-client     `ssh`, the client the SSH tests log in to app instances with
# and, from PyPI, prometheus-client: the platform tests parse /metrics with its parser
set -euo pipefail

packages=(protobuf-compiler etcd-server curl iptables e2fsprogs busybox-static debootstrap runc crun docker-registry umoci skopeo wrk openssh-client)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "installing: ${missing[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi
# Debian's etcd-server package starts a system etcd on 2379; the tests start their own on free
# ports, so that one is left alone.

# Wasm guests (auction policies, lifecycles, test guests) are built for this target by
# plugin-sdk/artifacts during the normal build.
if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx wasm32-wasip2; then
  rustup target add wasm32-wasip2
fi

# The platform tests read every role's /metrics with Prometheus's own text parser (the official
# Python client's), from PyPI.
if ! python3 -c 'import prometheus_client' 2>/dev/null; then
  python3 -m pip install -q --disable-pip-version-check prometheus-client
fi
