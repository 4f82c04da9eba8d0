#!/usr/bin/env bash
# Install everything provisioner needs on a fresh Debian 12 machine (as root):
# the Debian packages in scripts/apt-packages.txt and a virtualenv at .venv with
# the package installed editable. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=$(grep -vE '^\s*(#|$)' scripts/apt-packages.txt | tr '\n' ' ')
missing=$(dpkg-query -W -f='${Status} ${Package}\n' $packages 2>/dev/null \
  | awk '$3=="installed"{print $4}' | sort | comm -13 - <(printf '%s\n' $packages | sort) || true)
if [ -n "$missing" ]; then
  # Debian starts a package's system service on install; the lab runs its own
  # instances on loopback addresses, so keep the system ones from starting.
  added_policy=0
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    added_policy=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
  [ "$added_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[test]'
echo "setup: ok ($(.venv/bin/provisioner --help >/dev/null && echo provisioner installed))"
