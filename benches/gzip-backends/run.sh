#!/usr/bin/env bash
# flate2 backends compared by decompression throughput on one real gzip'd tar, alternating runs.
#
#   benches/gzip-backends/run.sh [FILE.gz]
#
# Builds this crate once per backend (zlib-rs, zlib-ng, miniz_oxide, system zlib; "+rt": with
# flate2's runtime_detection feature, which the workspace's default-features = false drops) into the shared
# target dir, then times `BACKEND FILE.gz` (decompress to stdout, which hyperfine sends to
# /dev/null) next to `gzip -dc` and `pigz -dc` on the same file, ROUNDS rounds with the order
# rotated each round, page cache warm. Without FILE.gz it makes one: a gzip -6 tar of the full
# Debian tree from shared/peers/debian-images.sh (≈ 400 MB of tar). Markdown table on stdout.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
ROUNDS=${ROUNDS:-5}
PEERS_IMAGES=${PEERS_IMAGES:-/var/tmp/strata-peers/images}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$REPO/target}/gzip-backends
BIN=$CARGO_TARGET_DIR/bin
# "zlib-rs" alone is the workspace's flate2 line today (default-features = false); "+rt" adds
# flate2's runtime_detection.
BACKENDS=(zlib-rs zlib-rs+rt zlib-ng+rt miniz+rt zlib+rt)

say() { printf '%s\n' "$*" >&2; }
die() { say "run.sh: $*"; exit 1; }
for t in cargo hyperfine jq gzip pigz cmake cc; do
  command -v $t >/dev/null || die "'$t' is missing (apt-get install -y hyperfine jq pigz cmake build-essential)"
done

mkdir -p "$BIN"
for b in "${BACKENDS[@]}"; do
  say "== building backend $b"
  cargo build -q --release --manifest-path "$HERE/Cargo.toml" --features "${b//+/,}" >&2
  cp "$CARGO_TARGET_DIR/release/gzip-backends" "$BIN/gunzip-$b"
done

W=$(mktemp -d /var/tmp/gzip-backends.XXXXXX)
trap 'rm -rf -- "$W"' EXIT
GZ=${1:-}
if [ -z "$GZ" ]; then
  [ -d "$PEERS_IMAGES/full/usr" ] || die "no input: pass FILE.gz, or run bash /work/shared/peers/debian-images.sh first"
  GZ=$W/full.tar.gz
  say "== making $GZ: tar of $PEERS_IMAGES/full, gzip -6"
  tar -C "$PEERS_IMAGES/full" -cf - . | gzip -6 >"$GZ"
fi
OUT=$(gzip -dc "$GZ" | wc -c)
IN=$(wc -c <"$GZ")
say "== $GZ: $IN bytes gzip, $OUT bytes out"
want=$(gzip -dc "$GZ" | sha256sum | cut -d' ' -f1)
for b in "${BACKENDS[@]}"; do
  got=$("$BIN/gunzip-$b" "$GZ" 2>/dev/null | sha256sum | cut -d' ' -f1)
  [ "$got" = "$want" ] || die "backend $b decompressed to different bytes"
done

labels=(); cmds=()
for b in "${BACKENDS[@]}"; do labels+=("flate2 $b"); cmds+=("$BIN/gunzip-$b $GZ"); done
labels+=("gzip -dc" "pigz -dc"); cmds+=("gzip -dc $GZ" "pigz -dc $GZ")
n=${#labels[@]}
for ((r = 0; r < ROUNDS; r++)); do
  names=(); cs=(); warm=(); ((r == 0)) && warm=(--warmup 1)
  for ((k = 0; k < n; k++)); do i=$(((k + r) % n)); names+=(-n "${labels[i]}"); cs+=("${cmds[i]}"); done
  # -N: no shell in between; stdout of each command goes to /dev/null (hyperfine's default).
  say "-- round $((r + 1))/$ROUNDS"
  hyperfine -N --style basic "${warm[@]}" --runs 1 "${names[@]}" --export-json "$W/r$r.json" "${cs[@]}" >&2
done

cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
echo "gzip decompression, $(date -u +%Y-%m-%d), $(nproc) cores ($cpu): $((IN >> 20)) MiB gzip → $((OUT >> 20)) MiB tar,"
echo "$ROUNDS alternating rounds, median (min) wall time, MB/s of uncompressed output."
echo
echo "| decompressor | median | min | MB/s (median) | vs zlib-rs |"
echo "| --- | --- | --- | --- | --- |"
ref=
for l in "${labels[@]}"; do
  read -r med min < <(jq -rs --arg l "$l" '[.[].results[] | select(.command == $l) | .times[]] | sort
    | (length) as $n | "\(if $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end) \(.[0])"' "$W"/r*.json)
  [ -n "$ref" ] || ref=$med
  awk -v l="$l" -v m="$med" -v n="$min" -v o="$OUT" -v r="$ref" \
    'BEGIN{ printf "| %s | %.3f s | %.3f s | %.0f | %.2f× |\n", l, m, n, o/m/1e6, r/m }'
done
