#!/usr/bin/env bash
# The README's two commands on a fresh Debian machine, built here as a container root from
# Debian's packages: debootstrap --variant=minbase bookworm, plus only what a new
# machine of this kind has before anything is installed (Node.js 20 with npm as this
# machine has them, python3, make, g++, and the kind's network set-up: apt sources,
# CA certificates, npm's config). A clean clone of this repository's HEAD goes in,
# and `npm run lab`, `npx twill lab down` and `npm test` run there as root with no
# standard input. See test/fresh/README.md.
#
#   bash test/fresh/run.sh [all|lab|test] [--overlay FILE]... [--keep]
#
#   all (default)  npm run lab, npx twill lab down, then npm test, in one fresh root
#   lab | test     only that command (with lab down after lab), in a fresh root
#   machine        only build the cached tarballs (debootstrap, the new machine)
#   --overlay F    copy F from this working tree over the clone (to confirm an
#                  uncommitted fix, e.g. scripts/ensure-deps.sh); the summary names it
#   --keep         leave the root filesystem in place afterwards (it is removed at
#                  the start of the next run in any case)
#
#   bash test/fresh/run.sh exec 'COMMAND'   runs COMMAND in /root/twill of the root a
#                  run left with --keep (to look into a failure; not a fresh check)
#
# Caches under /var/cache/twill/fresh (TWILL_FRESH_CACHE): the debootstrap tarball
# and the "new machine" tarball built from it. Each run unpacks that tarball anew
# under /var/tmp/twill-fresh (TWILL_FRESH_WORK) and writes its logs and summary.txt
# to /var/tmp/twill-fresh/logs/<time>/.
set -euo pipefail

CACHE=${TWILL_FRESH_CACHE:-/var/cache/twill/fresh}
WORK=${TWILL_FRESH_WORK:-/var/tmp/twill-fresh}
MIRROR=http://deb.debian.org/debian
SUITE=bookworm
PATH_ENV=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
SELF=$(readlink -f "$0")
REPO=$(git -C "$(dirname "$SELF")" rev-parse --show-toplevel)

say() { echo "fresh: $*" >&2; }
die() { say "$*"; exit 1; }

# ------------------------------------------------------------------ the container

# The root runs as a container does: a mount namespace of its own whose root mount
# is the tree (pivot_root, not chroot: runc inside, as containerd's tests run it,
# pivots again, and `ctr tasks exec` then joins the container's mounts; in a plain
# chroot those land on this machine's /). A holder process keeps the namespace;
# each command enters it with nsenter.
#
# Mounted as a container has them: /proc, /sys with the cgroup hierarchies
# (containerd's tests need them), a /dev of its own (null, zero, random, tty,
# net/tun, its own pts and shm), a private /run (so /run/netns names are this
# root's own) and this machine's DNS.
holder() {
  local R=$1
  mount --bind "$R" "$R"
  mount -t proc proc "$R/proc"
  mount -t sysfs sysfs "$R/sys"
  mount --rbind /sys/fs/cgroup "$R/sys/fs/cgroup"
  mount -t tmpfs -o mode=755,nosuid,size=65536k tmpfs "$R/dev"
  local d
  for d in null:1:3 zero:1:5 full:1:7 random:1:8 urandom:1:9 tty:5:0; do
    IFS=: read -r n ma mi <<<"$d"
    mknod -m 666 "$R/dev/$n" c "$ma" "$mi"
  done
  mkdir -p "$R/dev/net" "$R/dev/pts" "$R/dev/shm"
  mknod -m 666 "$R/dev/net/tun" c 10 200
  mount -t devpts -o newinstance,ptmxmode=0666,mode=620,gid=5 devpts "$R/dev/pts"
  ln -s pts/ptmx "$R/dev/ptmx"
  mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$R/dev/shm"
  ln -s /proc/self/fd "$R/dev/fd"
  ln -s /proc/self/fd/0 "$R/dev/stdin"; ln -s /proc/self/fd/1 "$R/dev/stdout"; ln -s /proc/self/fd/2 "$R/dev/stderr"
  mount -t tmpfs -o mode=755,nosuid,nodev tmpfs "$R/run"
  mkdir -p "$R/run/lock"
  rm -f "$R/etc/resolv.conf"
  cp /etc/resolv.conf "$R/etc/resolv.conf"
  mkdir -p "$R/.oldroot"
  cd "$R"
  pivot_root . .oldroot
  cd /
  umount -l /.oldroot
  rmdir /.oldroot
  touch /run/.twill-fresh-ready
  exec sleep infinity
}
if [ "${1:-}" = __holder ]; then shift; holder "$@"; exit 1; fi

HOLDER=0
start_root() {
  local R=$1 k
  unshare --mount --propagation private -- bash "$SELF" __holder "$R" </dev/null &
  HOLDER=$!
  for k in $(seq 100); do [ -e "/proc/$HOLDER/root/run/.twill-fresh-ready" ] && return 0; kill -0 "$HOLDER" 2>/dev/null || break; sleep 0.1; done
  die "the root's namespace did not come up"
}

# Runs a command in the root with a clean environment: what a root login on the
# kind has (PATH, HOME, LANG, and NODE_EXTRA_CA_CERTS, which the kind sets).
in_root() {
  nsenter --target "$HOLDER" --mount --root --wd -- /usr/bin/env -i PATH="$PATH_ENV" HOME=/root LANG=C.UTF-8 TERM=dumb \
    NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt "$@"
}

# Processes whose root directory is the tree's (all started by this script, in its
# namespace or in namespaces made below it), by pid.
root_pids() {
  local R=$1 id p
  id=$(stat -c %d:%i "$R" 2>/dev/null) || return 0
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$HOLDER" ] && continue
    [ "$(stat -L -c %d:%i "$p/root" 2>/dev/null)" = "$id" ] && echo "${p#/proc/}"
  done
  return 0
}

describe_pids() { local p; for p in "$@"; do printf '%s(%s) ' "$p" "$(cat "/proc/$p/comm" 2>/dev/null)"; done; }

end_root_processes() {
  local R=$1 pids
  pids=$(root_pids "$R" | tr '\n' ' ')
  if [ -n "$pids" ]; then
    say "still running in the root: $(describe_pids $pids)"
    kill -TERM $pids 2>/dev/null || true
    sleep 3
    pids=$(root_pids "$R" | tr '\n' ' ')
    [ -n "$pids" ] && kill -KILL $pids 2>/dev/null || true
  fi
  if [ "$HOLDER" != 0 ]; then kill "$HOLDER" 2>/dev/null || true; wait "$HOLDER" 2>/dev/null || true; HOLDER=0; fi
  return 0
}

# ------------------------------------------------------------------ outside

[ "$(id -u)" = 0 ] || die "run as root (debootstrap, namespaces, mounts)"
CUR=""
trap '[ -n "$CUR" ] && end_root_processes "$CUR"' EXIT
if [ "${1:-}" = exec ]; then
  shift
  [ -d "$WORK/root/root/twill" ] || die "no root left by a run with --keep in $WORK/root"
  CUR=$WORK/root
  start_root "$CUR"
  set +e; in_root /bin/bash -c "cd /root/twill && $*" </dev/null; rc=$?; set -e
  exit $rc
fi
PHASE=all; KEEP=0; OVERLAYS=()
while [ $# -gt 0 ]; do
  case "$1" in
    all|lab|test|machine) PHASE=$1 ;;
    --keep) KEEP=1 ;;
    --overlay) OVERLAYS+=("$2"); shift ;;
    *) die "unknown argument $1 (see the top of $SELF)" ;;
  esac
  shift
done
for t in debootstrap unshare nsenter pivot_root chroot dpkg-deb git flock; do command -v "$t" >/dev/null || die "$t is needed on this machine"; done
mkdir -p "$CACHE" "$WORK"
exec 9>"$CACHE/.lock"
flock -n 9 || die "another run holds $CACHE/.lock"

# The debootstrap tarball, once.
BASE=$CACHE/debian-$SUITE-minbase.tar
if [ ! -f "$BASE" ]; then
  say "debootstrap --variant=minbase $SUITE (once; a few minutes)"
  tmp=$WORK/debootstrap.tmp
  rm -rf "$tmp"
  debootstrap --variant=minbase "$SUITE" "$tmp" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 || die "debootstrap failed: see $WORK/debootstrap.log"
  tar --numeric-owner --xattrs -C "$tmp" -cf "$BASE.tmp" .
  mv "$BASE.tmp" "$BASE"
  rm -rf "$tmp"
fi

# This machine's Node.js, exactly as installed: the nodejs package (NodeSource's
# build) repacked from its installed files and dpkg's record of it, then its npm
# directory as it is now (the kind upgrades npm when a machine starts).
NODE_PKG=$(dpkg-query -W -f '${Version}' nodejs 2>/dev/null) || die "node here is not from a nodejs package: $(command -v node)"
[ "$(readlink -f "$(command -v node)")" = /usr/bin/node ] || die "node here is $(command -v node), not the nodejs package's"
NPM_VERSION=$(node -p 'require("/usr/lib/node_modules/npm/package.json").version')
DEB=$CACHE/nodejs_${NODE_PKG}_amd64.repack.deb
if [ ! -f "$DEB" ]; then
  say "repacking the installed nodejs $NODE_PKG"
  pkg=$WORK/nodejs-pkg
  rm -rf "$pkg"; mkdir -p "$pkg/DEBIAN"
  dpkg-query -L nodejs | while read -r f; do
    if [ -L "$f" ] || { [ -e "$f" ] && [ ! -d "$f" ]; }; then echo "${f#/}"; fi
  done >"$WORK/nodejs.files"
  tar -C / --no-recursion -cf - -T "$WORK/nodejs.files" | tar -C "$pkg" -xf -
  dpkg-query -s nodejs | grep -v '^Status:' >"$pkg/DEBIAN/control"
  for s in preinst postinst prerm postrm md5sums conffiles; do
    [ -f "/var/lib/dpkg/info/nodejs.$s" ] && cp "/var/lib/dpkg/info/nodejs.$s" "$pkg/DEBIAN/$s"
  done
  chmod 755 "$pkg"/DEBIAN/*inst "$pkg"/DEBIAN/*rm 2>/dev/null || true
  dpkg-deb --root-owner-group -Zgzip -z1 -b "$pkg" "$DEB.tmp" >/dev/null
  mv "$DEB.tmp" "$DEB"
  rm -rf "$pkg" "$WORK/nodejs.files"
fi

# The kind's set-up that is not an installed program: apt sources and settings,
# extra CA certificates (the registries are reached through them), npm's config.
KIND_FILES=(/etc/apt/sources.list.d/debian.sources /etc/apt/apt.conf.d/99artifact-registry /usr/etc/npmrc /root/.npmrc)
for f in /usr/local/share/ca-certificates/*.crt; do [ -f "$f" ] && KIND_FILES+=("$f"); done
KEY=$( { echo "$SUITE $NODE_PKG npm-$NPM_VERSION python3 make g++ v1"; sha256sum "$BASE" "$DEB" | cut -d' ' -f1;
         for f in "${KIND_FILES[@]}"; do [ -f "$f" ] && { echo "$f"; cat "$f"; }; done; } | sha256sum | cut -c1-16)
SYSTEM=$CACHE/machine-$KEY.tar
if [ ! -f "$SYSTEM" ]; then
  say "building the new machine ($KEY): minbase + nodejs $NODE_PKG (npm $NPM_VERSION) + python3 make g++"
  B=$WORK/build
  rm -rf "$B"; mkdir -p "$B"
  tar --numeric-owner --xattrs -C "$B" -xf "$BASE"
  rm -f "$B/etc/apt/sources.list"
  for f in "${KIND_FILES[@]}"; do [ -f "$f" ] && { mkdir -p "$B$(dirname "$f")"; cp -p "$f" "$B$f"; }; done
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\nff02::1\t\tip6-allnodes\nff02::2\t\tip6-allrouters\n' >"$B/etc/hosts"
  cp "$DEB" "$B/tmp/nodejs.deb"
  CUR=$B
  start_root "$B"
  in_root /bin/sh -ec '
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends /tmp/nodejs.deb python3 make g++ >/dev/null
    update-ca-certificates >/dev/null
    apt-get clean
    rm -rf /var/lib/apt/lists/* /tmp/nodejs.deb
  ' </dev/null || die "building the machine failed"
  end_root_processes "$B"; CUR=""
  rm -rf "$B/usr/lib/node_modules/npm"
  cp -a /usr/lib/node_modules/npm "$B/usr/lib/node_modules/npm"
  for l in npm npx; do ln -sfn "../lib/node_modules/npm/bin/$l-cli.js" "$B/usr/bin/$l"; done
  rm -f "$B/etc/resolv.conf"
  [ "$(chroot "$B" /usr/bin/node --version)" = "$(node --version)" ] || die "node in the machine is not this machine's"
  [ "$(chroot "$B" /usr/bin/env PATH=$PATH_ENV HOME=/root npm --version)" = "$NPM_VERSION" ] || die "npm in the machine is not this machine's"
  tar --numeric-owner --xattrs -C "$B" -cf "$SYSTEM.tmp" .
  mv "$SYSTEM.tmp" "$SYSTEM"
  rm -rf "$B"
  for old in "$CACHE"/machine-*.tar; do [ "$old" = "$SYSTEM" ] || rm -f "$old"; done
fi

[ "$PHASE" = machine ] && { say "machine ready: $SYSTEM"; exit 0; }

# A fresh root for this run: leftovers of an earlier run go first (its processes by pid).
R=$WORK/root
end_root_processes "$R"
rm -rf "$R"; mkdir -p "$R"
say "unpacking the new machine"
tar --numeric-owner --xattrs -C "$R" -xf "$SYSTEM"
COMMIT=$(git -C "$REPO" rev-parse HEAD)
git clone -q --no-hardlinks "$REPO" "$R/root/twill"
[ "$(git -C "$R/root/twill" rev-parse HEAD)" = "$COMMIT" ] || die "the clone is not at $COMMIT"
for f in "${OVERLAYS[@]}"; do cp "$REPO/$f" "$R/root/twill/$f"; done

L=$WORK/logs/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$L"
say "commit $COMMIT, logs in $L"
CUR=$R
start_root "$R"
in_root dpkg-query -W -f '${Package} ${Version}\n' | sort >"$L/packages-before.txt"
step() { # name, command
  local name=$1 cmd=$2 t0 t1 rc secs
  say "running $name"
  t0=$(date +%s.%N)
  set +e
  in_root /bin/bash -c "cd /root/twill && $cmd" </dev/null >"$L/$name.log" 2>&1
  rc=$?
  set -e
  t1=$(date +%s.%N)
  secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
  printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >>"$L/steps.tsv"
  say "$name: exit $rc in $secs s"
}
if [ "$PHASE" = all ] || [ "$PHASE" = lab ]; then
  step lab 'npm run lab'
  step lab-down 'npx twill lab down'
  in_root /bin/sh -c 'echo "/run/netns: $(ls /run/netns 2>/dev/null)"; echo "/etc/netns: $(ls /etc/netns 2>/dev/null)"; echo "/run/twill/labs: $(ls /run/twill/labs 2>/dev/null)"' >"$L/after-lab-down.txt" || true
fi
if [ "$PHASE" = all ] || [ "$PHASE" = test ]; then
  step test 'npm test'
fi
in_root dpkg-query -W -f '${Package} ${Version}\n' | sort >"$L/packages-after.txt"
# What is left: network namespaces (named in this root's /run/netns), processes.
{ echo "network namespaces left in the root: $(ls "/proc/$HOLDER/root/run/netns" 2>/dev/null | tr '\n' ' ')"
  echo "processes left in the root: $(describe_pids $(root_pids "$R"))"
} >"$L/leftovers.txt"
end_root_processes "$R"; CUR=""

# The summary.
{
  echo "fresh-machine check of twill $COMMIT ($(git -C "$REPO" log -1 --format=%s "$COMMIT" | cut -c1-72))"
  echo "machine: debootstrap --variant=minbase $SUITE + nodejs $NODE_PKG (npm $NPM_VERSION, this machine's) + python3 make g++ (Debian), in a mount namespace of its own (pivot_root; own /dev, /run); kernel $(uname -r)"
  [ ${#OVERLAYS[@]} -gt 0 ] && echo "uncommitted files laid over the clone: ${OVERLAYS[*]}"
  echo "started $(basename "$L")"
  while IFS=$'\t' read -r name rc secs; do echo "$name: exit $rc, ${secs} s"; done <"$L/steps.tsv"
  for s in lab test; do
    [ -f "$L/$s.log" ] || continue
    grep -h 'twill: installing' "$L/$s.log" | sed "s/^/$s: ensure-deps: /" || true
  done
  [ -f "$L/test.log" ] && { echo -n "test summary: "; grep -E '^tests: [0-9]+ passed' "$L/test.log" | tail -1 || echo "(no summary line)"; }
  echo "Debian packages installed during the run: $(comm -13 <(cut -d' ' -f1 "$L/packages-before.txt") <(cut -d' ' -f1 "$L/packages-after.txt") | wc -l)"
  cat "$L/leftovers.txt"
} | tee "$L/summary.txt"
comm -13 <(cut -d' ' -f1 "$L/packages-before.txt") <(cut -d' ' -f1 "$L/packages-after.txt") >"$L/packages-installed.txt"
[ "$KEEP" = 1 ] || rm -rf "$R"
ok=1
while IFS=$'\t' read -r name rc secs; do [ "$rc" = 0 ] || ok=0; done <"$L/steps.tsv"
[ "$ok" = 1 ]
