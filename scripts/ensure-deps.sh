#!/usr/bin/env bash
# Installs what twill needs, only what is missing, so it is quick when all is there:
# Debian packages (apt-get), npm packages, the native addon and the compiled TypeScript.
set -euo pipefail
cd "$(dirname "$0")/.."

need_root() { if [ "$(id -u)" != 0 ]; then echo "twill: run as root (network namespaces, TUN and raw sockets need it)" >&2; exit 1; fi; }
need_root

# package:command-or-file that proves it is installed
PKGS=(
  iproute2:/usr/sbin/ip
  iptables:/usr/sbin/iptables
  nftables:/usr/sbin/nft
  dnsmasq-base:/usr/sbin/dnsmasq
  libc-bin:/usr/bin/getent
  procps:/usr/sbin/sysctl
  curl:/usr/bin/curl
  ca-certificates:/usr/sbin/update-ca-certificates
  openssl:/usr/bin/openssl
  iputils-ping:/usr/bin/ping
  iperf3:/usr/bin/iperf3
  ethtool:/usr/sbin/ethtool
  tcpdump:/usr/bin/tcpdump
  tshark:/usr/bin/tshark
  netsniff-ng:/usr/sbin/trafgen
  containerd:/usr/bin/containerd
  etcd-server:/usr/bin/etcd
  etcd-client:/usr/bin/etcdctl
  kubernetes-client:/usr/bin/kubectl
  golang-go:/usr/bin/go
  golang-github-appc-cni-dev:/usr/share/gocode/src/github.com/containernetworking/cni/libcni
  containernetworking-plugins:/usr/lib/cni/portmap
  busybox-static:/bin/busybox
  debootstrap:/usr/sbin/debootstrap
  git:/usr/bin/git
  wireguard-go:/usr/bin/wireguard-go
  wireguard-tools:/usr/bin/wg
  libpcap-dev:/usr/include/pcap.h
  python3:/usr/bin/python3
  make:/usr/bin/make
  g++:/usr/bin/g++
)
missing=()
for p in "${PKGS[@]}"; do [ -e "${p#*:}" ] || missing+=("${p%%:*}"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo >&2 "twill: installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections 2>/dev/null || true
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# npm packages: install when node_modules is missing or older than the lockfile.
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ] || [ package.json -nt node_modules/.package-lock.json ]; then
  echo >&2 "twill: npm install"
  # Not `npm ci`: this registry lacks some platform-only optional packages (rollup's), which
  # npm install skips but npm ci counts as a lock-file mismatch.
  npm install --no-audit --no-fund --loglevel=error >&2
fi

# Native addon and TypeScript: rebuild only when a source is newer than the output.
addon=dataplane/native/build/Release/twill_native.node
if [ ! -f "$addon" ] || [ -n "$(find dataplane/native/src dataplane/native/binding.gyp -newer "$addon" 2>/dev/null | head -1)" ]; then
  echo >&2 "twill: building the native addon"
  (cd dataplane/native && npx node-gyp rebuild --loglevel=error >/dev/null)
fi
stamp=dist/.build-stamp
if [ ! -f "$stamp" ] || [ -n "$(find agent lib dataplane cni policy bench cli lab tsconfig.json -name '*.ts' -newer "$stamp" -o -name tsconfig.json -newer "$stamp" 2>/dev/null | head -1)" ]; then
  echo >&2 "twill: compiling TypeScript"
  npx tsc -p tsconfig.json >&2
  touch "$stamp"
fi
# The CNI plugin as a single executable (runs on nodes without Node.js).
if [ ! -x dist/cni/twill-cni ] || [ -n "$(find cni agent lib dataplane -name '*.ts' -newer dist/cni/twill-cni 2>/dev/null | head -1)" ] || [ cni/build-sea.mjs -nt dist/cni/twill-cni ]; then
  echo >&2 "twill: building the twill-cni executable"
  node cni/build-sea.mjs >/dev/null
fi

