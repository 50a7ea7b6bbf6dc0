#!/usr/bin/env bash
# Host set-up for the harness, idempotent: a Docker engine that can run privileged kind
# nodes, kind, and the buildx CLI. Safe to run again; it leaves a working engine alone.
#
#   hermetic/setup-host.sh            # packages + engine + kind + buildx
#   hermetic/setup-host.sh engine     # only the Docker engine (also: packages, kind, buildx)
#
# Environment: HARNESS_CACHE (default ~/.cache/incident-harness) holds built tools,
# named with their versions; the engine's log is $HARNESS_CACHE/dockerd.log.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
. "$here/versions.env"
cache=${HARNESS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/incident-harness}
bindir="$cache/bin"
mkdir -p "$bindir"

say() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$1" >&2; [ $# -lt 2 ] || printf 'setup: what to do: %s\n' "$2" >&2; exit 1; }

is_root() { [ "$(id -u)" = 0 ]; }
is_debian() { [ -r /etc/debian_version ] && command -v apt-get >/dev/null; }

# wait_for DESCRIPTION SECONDS COMMAND...: bounded retry, one try a second.
wait_for() {
  local what=$1 limit=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 1
  done
}

# as_root CMD...: run as root, through sudo when this user is not root (CI runners).
as_root() {
  if is_root; then "$@"
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then sudo -n "$@"
  else die "'$*' needs root" "run 'sudo make setup', or run that command yourself"
  fi
}

apt_install() {
  is_debian || die "no apt-get here to install $*" "install $* with this system's package manager"
  if [ ! -f "$cache/.apt-updated" ] || [ -n "$(find "$cache/.apt-updated" -mmin +1440)" ]; then
    as_root apt-get update -qq && touch "$cache/.apt-updated"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Host packages the harness's own builds and checks use: debootstrap and a C compiler for
# the registry-free node image, shellcheck for actionlint, qemu-user-static for the emulation
# tests (without binfmt-support, so installing it registers nothing).
setup_packages() {
  is_debian || { say "not Debian: install debootstrap, gcc, shellcheck and qemu-user-static yourself if you need them"; return 0; }
  local missing=() pkg
  for pkg in debootstrap gcc libc6-dev binutils shellcheck qemu-user-static ca-certificates curl; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    say "installing ${missing[*]}"
    apt_install "${missing[@]}"
  fi
  if ! command -v go >/dev/null; then
    die "Go is not installed (kind, buildx and the node image's binaries are built with it)" \
        "install Go 1.24 or newer from https://go.dev/dl and put it on PATH"
  fi
}

# The capability bounding set is "short" when any of the 41 capabilities Linux 5.9+
# knows is missing from it; privileged containers then need the filtering runtime.
bounding_set_short() {
  local hex
  hex=$(awk '/^CapBnd:/ {print $2}' /proc/self/status)
  [ $((16#$hex & 0x1ffffffffff)) -ne $((0x1ffffffffff)) ]
}

privileged_works() {
  # A privileged container that only runs "true" proves the runtime can apply all caps.
  local img
  img=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -v '<none>' | head -n 1)
  [ -n "$img" ] || return 0   # nothing to try it with; the engine answered, trust it
  docker run --rm --privileged --entrypoint true "$img" >/dev/null 2>&1
}

build_capfilter() {
  local runc_path out
  runc_path=$(command -v runc) || die "runc is not installed" "apt-get install runc"
  out="$bindir/capfilter-runc"
  if [ ! -x "$out" ] || [ "$here/capfilter/main.go" -nt "$out" ]; then
    command -v go >/dev/null || die "building the capability filter needs Go" "install Go 1.21+ (https://go.dev/dl) or apt-get install golang"
    (cd "$here/capfilter" && CGO_ENABLED=0 go build -trimpath -ldflags "-X main.realRuntime=$runc_path" -o "$out.tmp" .)
    mv "$out.tmp" "$out"
  fi
  echo "$out"
}

setup_engine() {
  if docker info >/dev/null 2>&1; then
    say "Docker engine answers ($(docker info --format '{{.ServerVersion}}' 2>/dev/null)); leaving it as it is"
    if bounding_set_short && [ "$(docker info --format '{{.DefaultRuntime}}' 2>/dev/null)" != capfilter ] && ! privileged_works; then
      die "this engine cannot run privileged containers (the capability bounding set lacks some capabilities)" \
          "restart dockerd with --add-runtime capfilter=$(build_capfilter) --default-runtime capfilter"
    fi
    return 0
  fi
  if ! command -v dockerd >/dev/null || ! command -v containerd >/dev/null || ! command -v runc >/dev/null; then
    say "installing Docker engine from Debian (docker.io, containerd, runc)"
    apt_install docker.io containerd runc iptables
  fi
  is_root || die "no Docker engine answers and starting one needs root" "start Docker (e.g. 'sudo systemctl start docker'), or run 'sudo make setup'"
  # A stale pid file from an engine that died with the machine blocks a new start.
  if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then rm -f /var/run/docker.pid; fi
  local args=()
  if bounding_set_short; then
    args+=(--add-runtime "capfilter=$(build_capfilter)" --default-runtime capfilter)
    say "capability bounding set is short: privileged containers go through $bindir/capfilter-runc"
  fi
  say "starting dockerd (log: $cache/dockerd.log)"
  # setsid: the engine outlives this script and its terminal.
  setsid dockerd "${args[@]}" >"$cache/dockerd.log" 2>&1 < /dev/null &
  wait_for "dockerd" 60 docker info || die "dockerd did not answer within 60 s" "read $cache/dockerd.log"
  say "Docker engine $(docker info --format '{{.ServerVersion}}') is up"
}

kind_ok() { [ -x "$1" ] && "$1" version 2>/dev/null | grep -q "kind $KIND_VERSION "; }

setup_kind() {
  local target="$bindir/kind-$KIND_VERSION"
  if command -v kind >/dev/null && kind_ok "$(command -v kind)"; then
    say "kind $KIND_VERSION on PATH: $(command -v kind)"; return 0
  fi
  if kind_ok "$target"; then say "kind $KIND_VERSION: $target"; return 0; fi
  local arch; arch=$(uname -m)
  if [ "$arch" = x86_64 ] && command -v curl >/dev/null; then
    if curl -fsSL --connect-timeout 5 --max-time 120 -o "$target.tmp" \
        "https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-linux-amd64" 2>/dev/null \
       && echo "$KIND_SHA256_LINUX_AMD64  $target.tmp" | sha256sum -c --status; then
      chmod +x "$target.tmp" && mv "$target.tmp" "$target"
      say "kind $KIND_VERSION: release binary, checksum verified"; return 0
    fi
    rm -f "$target.tmp"
    say "kind release binary not reachable (or checksum differs); building it with go"
  fi
  command -v go >/dev/null || die "kind $KIND_VERSION is missing and Go is not installed to build it" \
    "install kind $KIND_VERSION (https://kind.sigs.k8s.io) or Go 1.21+"
  local gobin; gobin=$(mktemp -d)
  GOBIN=$gobin CGO_ENABLED=0 go install "sigs.k8s.io/kind@$KIND_VERSION"
  mv "$gobin/kind" "$target" && rmdir "$gobin"
  say "kind $KIND_VERSION: built with go: $target"
}

buildx_ok() { "$@" version 2>/dev/null | grep -q 'buildx'; }

setup_buildx() {
  local target="$bindir/buildx-$BUILDX_VERSION"
  if docker buildx version >/dev/null 2>&1; then say "docker buildx: $(docker buildx version | head -n 1)"; return 0; fi
  if buildx_ok "$target"; then say "buildx $BUILDX_VERSION: $target"; return 0; fi
  command -v go >/dev/null || die "docker buildx is missing and Go is not installed to build it" \
    "install the docker-buildx plugin, or Go 1.21+"
  local gobin; gobin=$(mktemp -d)
  say "building buildx $BUILDX_VERSION with go"
  GOBIN=$gobin CGO_ENABLED=0 go install -ldflags "-X github.com/docker/buildx/version.Version=$BUILDX_VERSION" "github.com/docker/buildx/cmd/buildx@$BUILDX_VERSION"
  mv "$gobin/buildx" "$target" && rmdir "$gobin"
  say "buildx $BUILDX_VERSION: $target"
}

# Each kind node runs a kubelet, containerd and systemd that each take inotify instances; with the
# kernel's default of 128 per user a few clusters side by side (the e2e tests make their own)
# exhaust it and a new node's kubelet fails with "inotify_init: too many open files" (kind's
# known-issues page). Raise the limits (never lower them), as root only.
setup_inotify() {
  is_root || { say "inotify: not root, leaving fs.inotify limits as they are"; return 0; }
  local key want have
  for pair in max_user_instances=512 max_user_watches=524288; do
    key=${pair%=*}; want=${pair#*=}
    have=$(cat "/proc/sys/fs/inotify/$key" 2>/dev/null || echo 0)
    if [ "$have" -lt "$want" ]; then
      echo "$want" > "/proc/sys/fs/inotify/$key" && say "inotify: fs.inotify.$key $have -> $want"
    fi
  done
}

case "${1:-all}" in
  engine) setup_engine ;;
  kind) setup_kind ;;
  buildx) setup_buildx ;;
  packages) setup_packages ;;
  inotify) setup_inotify ;;
  all) setup_packages; setup_inotify; setup_engine; setup_kind; setup_buildx ;;
  *) die "unknown part '$1'" "use one of: all packages engine kind buildx" ;;
esac
