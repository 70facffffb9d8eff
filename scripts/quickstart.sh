#!/usr/bin/env bash
# Quick start, offline: builds strata, makes a small root filesystem from this machine's own
# binaries (busybox-static when installed, else /bin/sh and coreutils with their libraries),
# imports it as an image, and walks through the everyday commands in a throw-away store.
#
#   bash scripts/quickstart.sh            # store in a temp dir, removed at the end
#   STRATA_ROOT=/tmp/mystore bash scripts/quickstart.sh   # keep the store
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { say "$*"; "$@"; }

cargo build --release --quiet -p strata-cli
STRATA=$PWD/target/release/strata
work=$(mktemp -d /var/tmp/strata-quickstart.XXXXXX)
trap 'rm -rf "$work"' EXIT
export STRATA_ROOT=${STRATA_ROOT:-$work/store}

# A root filesystem from what this machine has.
rootfs=$work/rootfs
mkdir -p "$rootfs"/{bin,etc,tmp,root}
chmod 1777 "$rootfs/tmp"
if [ -x /bin/busybox ] && ! ldd /bin/busybox >/dev/null 2>&1; then
  cp /bin/busybox "$rootfs/bin/"
  for a in sh ls cat echo id; do ln -s busybox "$rootfs/bin/$a"; done
  src="busybox-static"
else
  for b in sh ls cat echo id; do
    p=$(command -v "$b" || true); [ -n "$p" ] || continue
    cp -L "$p" "$rootfs/bin/$b"
    ldd "$p" 2>/dev/null | grep -oE '/[^ ]+' | while read -r lib; do
      mkdir -p "$rootfs$(dirname "$lib")"; cp -L "$lib" "$rootfs$lib"; done
  done
  src="host binaries and their libraries"
fi
printf 'root:x:0:0:root:/root:/bin/sh\n' > "$rootfs/etc/passwd"
echo "hello from strata" > "$rootfs/etc/motd"
echo "root filesystem from $src: $(find "$rootfs" | wc -l) entries"

run "$STRATA" import --change 'CMD ["/bin/sh"]' --change 'ENV GREETING=hi' -m "quick start" "$rootfs" quickstart/demo:1
run "$STRATA" tag quickstart/demo:1 quickstart/demo:latest
echo "# a second image sharing nothing with the first (a rebuild with one more file)"
echo extra > "$rootfs/etc/extra"
run "$STRATA" import "$rootfs" quickstart/demo:2
run "$STRATA" images
run "$STRATA" image inspect quickstart/demo:1
run "$STRATA" history quickstart/demo:1
run "$STRATA" save -o "$work/demo.tar" quickstart/demo:1
run "$STRATA" rmi quickstart/demo:1 quickstart/demo:latest
run "$STRATA" load -i "$work/demo.tar"
run "$STRATA" image tree
echo "# compare and read images without running them (diff exits 1 when they differ, like diff(1))"
run "$STRATA" diff quickstart/demo:1 quickstart/demo:2 || true
run "$STRATA" diff --config --stat quickstart/demo:1 quickstart/demo:2 || true
run "$STRATA" ls -l quickstart/demo:2 /etc
run "$STRATA" cat quickstart/demo:2 /etc/motd
run "$STRATA" layers quickstart/demo:2
run "$STRATA" system df -v
# Containers, when this machine can run them (root and an OCI runtime: apt-get install runc).
if [ "$(id -u)" = 0 ] && command -v runc >/dev/null; then
  run "$STRATA" run --name hello quickstart/demo:2 sh -c 'echo "$GREETING from a container"; echo changed > /etc/motd'
  run "$STRATA" ps -a
  run "$STRATA" diff hello
  run "$STRATA" commit -m "motd changed" hello quickstart/demo:3
  run "$STRATA" run --rm quickstart/demo:3 cat /etc/motd
  run "$STRATA" diff --layers --content quickstart/demo:2 quickstart/demo:3 || true
  run "$STRATA" rm hello
else
  echo "# (containers skipped: they need root and runc)"
fi
run "$STRATA" image prune -a --dry-run
run "$STRATA" image prune -a -f
run "$STRATA" system check
run "$STRATA" images
