#!/usr/bin/env bash
# Installs what the test suite needs when it is missing, then runs every test:
# unit, property, snapshot, and the lab farm of real sshd hosts (needs root).
set -euo pipefail
cd "$(dirname "$0")/.."

need_pkgs=()
[ -x /usr/sbin/sshd ] || need_pkgs+=(openssh-server)
command -v dot >/dev/null 2>&1 || need_pkgs+=(graphviz)
command -v ssh >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v unshare >/dev/null 2>&1 || need_pkgs+=(util-linux)
# Host scripts are tried under BusyBox's ash with its applets alone (src/transport/script/tests.rs).
command -v busybox >/dev/null 2>&1 || need_pkgs+=(busybox)
command -v dash >/dev/null 2>&1 || need_pkgs+=(dash)
# A login user that becomes root with sudo (tests/lab_hosts.rs).
command -v sudo >/dev/null 2>&1 || need_pkgs+=(sudo)
# chattr, for the immutable-target test.
command -v chattr >/dev/null 2>&1 || need_pkgs+=(e2fsprogs)
# The Mermaid picture of a plan is rendered in headless Chromium (tests/mermaid.rs).
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v npm >/dev/null 2>&1 || need_pkgs+=(npm)
# apply's progress is checked in a 40-line terminal (tests/lab_review.rs).
command -v tmux >/dev/null 2>&1 || need_pkgs+=(tmux)
# Rollout gates and the watcher's metrics are tried against real Prometheus (tests/lab_prometheus.rs).
command -v prometheus >/dev/null 2>&1 || need_pkgs+=(prometheus)
# The watchers' etcd lease is tried against a real etcd cluster (tests/lab_etcd.rs);
# farmctl's etcd feature is built with protoc and the protobuf well-known types.
command -v etcd >/dev/null 2>&1 || need_pkgs+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || need_pkgs+=(etcd-client)
command -v protoc >/dev/null 2>&1 || need_pkgs+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need_pkgs+=(libprotobuf-dev)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)
# The address takeover is benchmarked beside keepalived (benches/vip.rs).
command -v keepalived >/dev/null 2>&1 || [ -x /usr/sbin/keepalived ] || need_pkgs+=(keepalived)
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "error: the lab farm needs ${need_pkgs[*]} and root; run this script as root" >&2
    exit 1
  fi
  echo "installing ${need_pkgs[*]} ..." >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
mkdir -p /run/sshd

# Mermaid's browser bundle, pinned, fetched once into target/ (npm's registry).
MERMAID_VERSION=11.12.1
if [ ! -f target/mermaid/package/dist/mermaid.min.js ]; then
  mkdir -p target/mermaid
  (cd target/mermaid && npm pack --silent "mermaid@$MERMAID_VERSION" >/dev/null && tar xzf "mermaid-$MERMAID_VERSION.tgz" package/dist/mermaid.min.js)
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "error: cargo is missing; install Rust (https://rustup.rs) first" >&2
  exit 1
fi

# --no-fail-fast: one failing test binary never hides the results of the others.
# --features etcd: the etcd lease is part of what is tested.
cargo test --locked --no-fail-fast --features etcd "$@"
