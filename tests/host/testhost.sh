#!/usr/bin/env bash
# Disposable local systemd test host for ibgw: Debian bookworm booted with
# systemd-nspawn (systemd as PID 1), reached over real SSH on 127.0.0.1:2222.
# Run as root. Everything lives in build/testhost/ (gitignored).
#
# Usage: tests/host/testhost.sh <command>
#   deps        install missing apt packages (debootstrap, systemd-container, ...)
#   build       build the base rootfs once (cached; atomic: temp dir + rename)
#   up          boot a fresh copy (--volatile=overlay: changes vanish at shutdown)
#               and wait until `systemctl is-system-running` says running
#   down        stop it (SIGTERM to nspawn, bounded wait); idempotent
#   ssh-config  write and print build/testhost/ssh_config (Host ibgw-testhost)
#   ssh [CMD]   run CMD (or a shell) in the test host
#   clean       down, then delete build/testhost
#
# Typical use:
#   tests/host/testhost.sh up        # builds first if needed
#   ssh -F build/testhost/ssh_config ibgw-testhost systemctl is-system-running
#   py.test --hosts=ssh://ibgw-testhost --ssh-config=build/testhost/ssh_config tests/...
#   tests/host/testhost.sh down
#
# Host keys: the container's ed25519 host key is generated at build time and
# pinned in build/testhost/known_hosts; ssh_config sets StrictHostKeyChecking yes.
# Note testinfra's default paramiko backend (--hosts=ibgw-testhost) ignores
# UserKnownHostsFile and accepts unknown keys with a warning; the ssh:// backend
# runs OpenSSH with this config and does verify the key.
#
# Environment: TESTHOST_MIRROR / TESTHOST_SECURITY_MIRROR override the mirrors
# taken from this machine's apt sources; TESTHOST_ALLOW_DEGRADED=1 accepts a
# `degraded` boot; TESTHOST_BOOT_TIMEOUT (s, default 60).
#
# Caveats: the container shares the host network (services bind host ports; one
# test host at a time) and there is no user namespace (container root = root).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DIR=$ROOT/build/testhost
ROOTFS=$DIR/rootfs
PIDFILE=$DIR/nspawn.pid
LOG=$DIR/nspawn.log
CFG=$DIR/ssh_config
NAME=ibgw-testhost
PORT=2222
SUITE=bookworm
PACKAGES=systemd,systemd-sysv,dbus,openssh-server,python3,sudo,iproute2
BOOT_TIMEOUT=${TESTHOST_BOOT_TIMEOUT:-60}

die() { echo "testhost: $*" >&2; exit 1; }
log() { echo "testhost: $*" >&2; }
need_root() { [[ $EUID -eq 0 ]] || die "must run as root"; }

cmd_deps() {
  need_root
  # command -> package providing it
  local -A want=([debootstrap]=debootstrap [systemd-nspawn]=systemd-container
                 [ssh]=openssh-client [ssh-keygen]=openssh-client [ss]=iproute2
                 [setsid]=util-linux [flock]=util-linux)
  local c missing=()
  for c in "${!want[@]}"; do command -v "$c" >/dev/null || missing+=("${want[$c]}"); done
  [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
  ((${#missing[@]})) || return 0
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  apt-get install -y --no-install-recommends "${missing[@]}"
}

# "URI SUITE" for every enabled binary source of this machine (one-line and deb822).
host_sources() {
  local f
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue   # format: deb [opts] URI SUITE COMPONENTS...
    awk '$1 == "deb" { sub(/^deb[ \t]+(\[[^]]*\][ \t]+)?/, ""); print $1, $2 }' "$f"
  done
  for f in /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue   # stanzas of "Key: value" separated by blank lines
    awk 'function flush(  u, s, i, j, nu, ns) {
           if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
             nu = split(uris, u, " "); ns = split(suites, s, " ")
             for (i = 1; i <= nu; i++) for (j = 1; j <= ns; j++) print u[i], s[j]
           }
           types = uris = suites = enabled = ""
         }
         /^[ \t]*#/ { next }
         /^[ \t]*$/ { flush(); next }
         /^[^ \t]/  { k = tolower($1); sub(/:.*/, "", k); sub(/^[^:]*:[ \t]*/, "")
                      if (k == "types") types = $0; else if (k == "uris") uris = $0
                      else if (k == "suites") suites = $0; else if (k == "enabled") enabled = $0 }
         END { flush() }' "$f"
  done
}

# Sets MIRROR and SECURITY from the machine's own apt sources (no hard-coded host).
find_mirrors() {
  local codename srcs
  # shellcheck source=/dev/null
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  srcs=$(host_sources | awk '$1 ~ /^https?:\/\//')
  MIRROR=${TESTHOST_MIRROR:-$(awk -v a="$SUITE" -v b="$codename" \
    '$2 == a || $2 == b { print $1; exit }' <<<"$srcs")}
  SECURITY=${TESTHOST_SECURITY_MIRROR:-$(awk '$2 ~ /-security$|\/updates$/ { print $1; exit }' <<<"$srcs")}
  MIRROR=${MIRROR%/}; SECURITY=${SECURITY%/}
  [[ -n $MIRROR ]] || die "no Debian mirror in this machine's apt sources; set TESTHOST_MIRROR"
  # Debian convention: .../debian and .../debian-security side by side.
  [[ -n $SECURITY || $MIRROR != */debian ]] || SECURITY=$MIRROR-security
  [[ -n $SECURITY ]] || die "no Debian security mirror found; set TESTHOST_SECURITY_MIRROR"
}

# Remove a (possibly half-built) tree: unmount anything debootstrap left mounted first.
discard() {
  local d=$1 m
  [[ -e $d ]] || return 0
  awk -v p="$d/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done
  rm -rf --one-file-system "$d"
}

built() { [[ -d $ROOTFS && -s $DIR/id_ed25519 && -s $DIR/known_hosts ]]; }

cmd_build() {
  need_root; cmd_deps
  mkdir -p "$DIR"
  exec 9>"$DIR/.lock"; flock 9          # one build at a time (fd closed below)
  if built; then exec 9>&-; log "base rootfs cached: $ROOTFS"; return 0; fi
  local d; for d in "$DIR"/.build.* "$ROOTFS"; do discard "$d"; done   # leftovers of an interrupted build
  find_mirrors
  log "debootstrap $SUITE from $MIRROR (security: $SECURITY)"
  local r P
  tmp=$(mktemp -d "$DIR/.build.XXXXXX"); r=$tmp/rootfs   # global: used by the trap
  trap 'discard "$tmp"' EXIT
  # Propagate an apt proxy (apt config or env) to debootstrap and to apt inside.
  eval "$(apt-config shell P Acquire::http::Proxy)"; P=${P:-${http_proxy:-}}
  [[ -z $P || $P == DIRECT ]] || export http_proxy=$P
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$r" "$MIRROR"

  # apt inside: same mirrors, same proxy / Release-date checks as this machine
  # (a mirror that is a dated snapshot otherwise fails with "Release file expired").
  rm -f "$r"/etc/apt/sources.list.d/*
  printf 'deb %s %s main\n' "$MIRROR" "$SUITE" "$MIRROR" "$SUITE-updates" \
    "$SECURITY" "$SUITE-security" >"$r/etc/apt/sources.list"
  apt-config dump | grep -E '^Acquire::(https?::Proxy|Check-Valid-Until|Check-Date) ' \
    >"$r/etc/apt/apt.conf.d/90testhost" || true
  [[ -z ${http_proxy:-} ]] || echo "Acquire::http::Proxy \"$http_proxy\";" >>"$r/etc/apt/apt.conf.d/90testhost"
  # Background apt runs would grab the dpkg lock in the middle of tests.
  ln -sf /dev/null "$r/etc/systemd/system/apt-daily.timer"
  ln -sf /dev/null "$r/etc/systemd/system/apt-daily-upgrade.timer"

  # Identity: hostname resolvable (sudo complains otherwise); debootstrap copied ours.
  echo "$NAME" >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
    "$NAME" >"$r/etc/hosts"

  # sshd: loopback only, key auth only, a single pinned ed25519 host key.
  cat >"$r/etc/ssh/sshd_config.d/10-testhost.conf" <<EOF
Port $PORT
ListenAddress 127.0.0.1
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
HostKey /etc/ssh/ssh_host_ed25519_key
EOF
  rm -f "$r"/etc/ssh/ssh_host_*
  ssh-keygen -q -t ed25519 -N '' -C "root@$NAME" -f "$r/etc/ssh/ssh_host_ed25519_key"
  echo "[127.0.0.1]:$PORT $(cut -d' ' -f1,2 "$r/etc/ssh/ssh_host_ed25519_key.pub")" >"$tmp/known_hosts"

  # Client key -> root's authorized_keys.
  ssh-keygen -q -t ed25519 -N '' -C "ibgw-testhost-client" -f "$tmp/id_ed25519"
  install -d -m 0700 "$r/root/.ssh"
  install -m 0600 "$tmp/id_ed25519.pub" "$r/root/.ssh/authorized_keys"

  # Commit: keys first, rootfs rename last (its presence marks a complete build).
  mv -f "$tmp/id_ed25519" "$tmp/id_ed25519.pub" "$tmp/known_hosts" "$DIR/"
  mv "$r" "$ROOTFS"
  discard "$tmp"; trap - EXIT; exec 9>&-
  log "built $ROOTFS ($(du -sh --one-file-system "$ROOTFS" | cut -f1))"
}

cmd_ssh_config() {
  mkdir -p "$DIR"
  cat >"$CFG" <<EOF
Host $NAME
  HostName 127.0.0.1
  Port $PORT
  User root
  IdentityFile $DIR/id_ed25519
  IdentitiesOnly yes
  UserKnownHostsFile $DIR/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  ConnectTimeout 5
  LogLevel ERROR
EOF
  cat "$CFG"
}

# True if the pid file names a live systemd-nspawn of our rootfs (not a recycled pid).
running() {
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) && [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "systemd-nspawn.* -D $ROOTFS "
}

port_taken() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$PORT" 2>/dev/null; }

tssh() { ssh -F "$CFG" "$NAME" "$@"; }

cmd_up() {
  need_root
  built || cmd_build
  [[ -s $CFG ]] || cmd_ssh_config >/dev/null
  if running; then log "already up (nspawn pid $(cat "$PIDFILE"))"; return 0; fi
  rm -f "$PIDFILE"
  if port_taken; then
    ss -Hltnp "sport = :$PORT" >&2 || true
    die "127.0.0.1:$PORT is already in use by something else"
  fi
  # --register=no --keep-unit: this machine's PID 1 is not systemd (no system bus).
  setsid systemd-nspawn -b -D "$ROOTFS" -M "$NAME" --volatile=overlay \
    --console=passive --register=no --keep-unit >"$LOG" 2>&1 </dev/null &
  local pid=$!
  echo "$pid" >"$PIDFILE"

  local deadline=$((SECONDS + BOOT_TIMEOUT)) state err=$DIR/.ssh.err
  while :; do
    # kill -0, not running(): right after the fork /proc still shows this shell, not nspawn.
    kill -0 "$pid" 2>/dev/null || { tail -n 30 "$LOG" >&2; rm -f "$PIDFILE"; die "systemd-nspawn exited (log: $LOG)"; }
    state=$(tssh systemctl is-system-running 2>"$err") || true
    case $state in
      running) break ;;
      degraded)
        log "degraded; failed units:"; tssh systemctl --failed --no-legend >&2 || true
        [[ ${TESTHOST_ALLOW_DEGRADED:-} == 1 ]] && break
        cmd_down; die "boot degraded (set TESTHOST_ALLOW_DEGRADED=1 to accept)" ;;
    esac
    if ((SECONDS >= deadline)); then
      cat "$err" >&2; cmd_down
      die "not running after ${BOOT_TIMEOUT}s (last state: '${state:-no ssh}', log: $LOG)"
    fi
    sleep 0.3
  done
  rm -f "$err"
  log "up: $state (nspawn pid $(cat "$PIDFILE")); ssh -F $CFG $NAME"
}

cmd_down() {
  need_root
  if ! running; then rm -f "$PIDFILE"; log "not running"; return 0; fi
  local pid i
  pid=$(cat "$PIDFILE")
  kill -TERM "$pid"            # nspawn asks the container's systemd to halt cleanly
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "no clean halt after 20s; killing"
    pkill -KILL -P "$pid" || true   # container init: takes its PID namespace with it
    kill -KILL "$pid" || true
    sleep 1
  fi
  rm -f "$PIDFILE"
  log "down"
}

cmd_clean() { cmd_down; discard "$DIR"; }

case ${1:-} in
  deps) cmd_deps ;;
  build) cmd_build ;;
  up) cmd_up ;;
  down) cmd_down ;;
  ssh-config) cmd_ssh_config ;;
  ssh) shift; [[ -s $CFG ]] || cmd_ssh_config >/dev/null; tssh "$@" ;;
  clean) cmd_clean ;;
  *) sed -n '2,/^set -euo/{/^#/s/^# \{0,1\}//p}' "$0"; exit 2 ;;
esac
