#!/usr/bin/env bash
# Make a local stand-in for the official debian:<suite>-slim image with mmdebstrap:
#
#   base.sh SUITE OUT.tar ACQUIRE.conf SOURCES...
#
# SOURCES are the machine's apt source files (one-line or deb822); mmdebstrap pastes each into
# the chroot's sources, so the image's apt uses what this machine uses. ACQUIRE.conf holds the
# machine's Acquire:: settings; it is used while bootstrapping and not kept. Like the official
# slim images (debuerreotype): minbase, merged /usr without the usrmerge package, no
# documentation, man pages or translations, and apt configured to keep no package cache.
set -euo pipefail

if [ "${1:-}" = --customize ]; then
  # mmdebstrap's customize hook: $2 is the chroot.
  root="$2"
  rm -f "$root/etc/apt/apt.conf.d/99mmdebstrap"
  cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
  echo 'Acquire::GzipIndexes "true";' >"$root/etc/apt/apt.conf.d/docker-gzip-indexes"
  echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
  echo 'Apt::AutoRemove::SuggestsImportant "false";' \
    >"$root/etc/apt/apt.conf.d/docker-autoremove-suggests"
  rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/var/log/*.log \
    "$root"/var/log/apt/*
  exit 0
fi

suite="$1" out="$2" acquire="$3"
shift 3
log="$(mktemp)"
trap 'rm -f "$log"' EXIT

mmdebstrap --variant=minbase --format=tar \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --aptopt="$acquire" \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/groff/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/lintian/*' \
  --dpkgopt='path-exclude=/usr/share/linda/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --customize-hook="bash $0 --customize \"\$1\"" \
  "$suite" "$out" "$@" >"$log" 2>&1 || { cat "$log" >&2; exit 1; }
