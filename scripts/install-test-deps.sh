#!/usr/bin/env bash
# Install the system packages the test servers need, when missing: MariaDB (mariadbd,
# mariadb-install-db), OpenLDAP (slapd, ldappasswd), Chromium (browser tests), Prometheus's
# promtool and libfaketime (a worker whose clock runs ahead, tests/faults/test_leases.py). Idempotent: detects each by its commands and installs only what is missing, running
# `apt-get update` only then. Without apt (or when it fails) it says so and exits 0: the tests
# that need a missing server skip with a reason.
# A package's post-install may start a system daemon (MariaDB on 3306, slapd on 389): the tests
# never use nor stop it, they start their own throwaway servers on free ports.
set -u

# package: the commands that show it is installed
PACKAGES=(
  "mariadb-server:mariadbd mariadb-install-db"
  "slapd:slapd"
  "ldap-utils:ldappasswd"
  "chromium:chromium"
  "prometheus:promtool"
  "faketime:faketime"
)

has_commands() {
  local command
  for command in "$@"; do
    # sbin is not always on PATH (mariadbd, slapd live there)
    PATH="$PATH:/usr/sbin:/sbin" command -v "$command" >/dev/null 2>&1 || return 1
  done
}

missing=()
for entry in "${PACKAGES[@]}"; do
  package="${entry%%:*}"
  read -r -a commands <<<"${entry#*:}"
  has_commands "${commands[@]}" || missing+=("$package")
done
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "note: apt-get is not available; not installing ${missing[*]} (tests that need them will skip)" >&2
  exit 0
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo -n)
  else
    echo "note: not root and no sudo; not installing ${missing[*]} (tests that need them will skip)" >&2
    exit 0
  fi
fi

export DEBIAN_FRONTEND=noninteractive
if ! "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null; then
  echo "note: apt-get update failed; not installing ${missing[*]} (tests that need them will skip)" >&2
  exit 0
fi
for package in "${missing[@]}"; do
  if "${sudo[@]}" apt-get -o DPkg::Lock::Timeout=300 install -y -qq --no-install-recommends "$package" >/dev/null; then
    echo "installed $package"
  else
    echo "note: apt-get install $package failed (tests that need it will skip)" >&2
  fi
done
exit 0
