#!/usr/bin/env bash
# Installs what the tests need (Debian packages: the peers used as oracles and busybox-static for
# test images) and runs every test of the workspace. Run as root on Debian 12.
set -euo pipefail
cd "$(dirname "$0")/.."
pkgs=(skopeo umoci busybox-static attr ca-certificates docker-registry openssl runc)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo not found: install a Rust toolchain (rustup)" >&2; exit 1; }
cargo test --workspace 2>&1
