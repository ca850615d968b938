#!/usr/bin/env bash
# Install the Debian packages whose programs the tests run: the validators of
# every rendered config and what the disposable test host needs. Installs only
# what is missing; services are not started (policy-rc.d), so nothing binds ports.
set -euo pipefail

packages=(
  haproxy nginx-light libnginx-mod-stream logrotate nftables systemd xvfb util-linux
  debootstrap systemd-container openssh-client iproute2
  # the lab (tests/lab/lab): its bastion's sshd and its apt proxy, both run by the lab itself
  openssh-server tinyproxy
  # front.tls: `ibgw tunnel --print-stunnel`'s configuration is run by the real stunnel
  stunnel4
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
policy=/usr/sbin/policy-rc.d
cleanup=""
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
  $sudo chmod +x "$policy"
  cleanup="$policy"
fi
trap '[ -z "$cleanup" ] || $sudo rm -f "$cleanup"' EXIT
$sudo apt-get update -qq
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
