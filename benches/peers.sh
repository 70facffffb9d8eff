#!/usr/bin/env bash
# Strata against its peers, side by side, on the same inputs, in alternating runs.
#
#   benches/peers.sh [SECTION...]      SECTION: hash unpack load df pull push compare (default: all)
#
# The machine's speed drifts (a shared VM: CPU steal up to a third), so no command gets all its
# runs in one block: every round runs each command of a section once through hyperfine, the
# order rotating from round to round, and the figures are the median and minimum over all
# rounds. Progress and hyperfine's own output go to stderr; stdout gets a markdown report: the
# exact command lines, then the results table. Exit status 2 if a section had to be skipped.
#
# Outputs are dropped between runs by renaming them aside (untimed, then `sync`), and deleted
# only at the end of their section, followed by a cool-down before the next section that writes
# to disk: this machine's root file system is ext4 without a journal, where inode allocation
# skips every inode freed in the last 60 s (fs/ext4/ialloc.c `recently_deleted()`), so an
# unpack right after an `rm -rf` of the previous one costs up to several times more in the
# kernel, and more for whichever tool happens to land in the block groups just freed.
#
# Environment:
#   STRATA=path        the strata binary           (default: target/release/strata)
#   EXAMPLES=dir       the store's example binaries (default: target/release/examples; build with
#                      cargo build --release -p strata-store --example sha256 --example unpack)
#   PEERS_IMAGES=dir   inputs from shared/peers/debian-images.sh (default /var/tmp/strata-peers/images)
#   ROUNDS=n           alternating rounds (default 5; each round runs every command once)
#   SCRATCH=dir        where outputs go (default /var/tmp: same disk for every tool)
#   HASH_MIB=n         size of the hash input on tmpfs (default 1024)
#   CMP_ROUNDS=n       rounds of the compare section, whose commands take milliseconds (default 30)
#   COOLDOWN=s         seconds between deleting a section's outputs and the next section's first
#                      write to disk (default 65; see above)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STRATA=${STRATA:-$REPO/target/release/strata}
EXAMPLES=${EXAMPLES:-$REPO/target/release/examples}
PEERS_IMAGES=${PEERS_IMAGES:-/var/tmp/strata-peers/images}
ROUNDS=${ROUNDS:-5}
SCRATCH=${SCRATCH:-/var/tmp}
HASH_MIB=${HASH_MIB:-1024}
COOLDOWN=${COOLDOWN:-65}
SECTIONS=("$@")
[ ${#SECTIONS[@]} -gt 0 ] || SECTIONS=(hash unpack load df pull push compare)

say() { printf '%s\n' "$*" >&2; }
die() { say "peers.sh: $*"; exit 1; }

for s in "${SECTIONS[@]}"; do
  case $s in hash|unpack|load|df|pull|push|compare) ;; *) die "unknown section '$s' (expected: hash unpack load df pull push compare)";; esac
done
for t in hyperfine jq awk; do
  command -v "$t" >/dev/null || die "'$t' is missing (apt-get install -y hyperfine jq gawk)"
done
[[ $ROUNDS =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$ROUNDS'"
[[ $COOLDOWN =~ ^[0-9]+$ ]] || die "COOLDOWN must be a number of seconds, not '$COOLDOWN'"
[ -d "$SCRATCH" ] || die "SCRATCH=$SCRATCH is not a directory"

W=$(mktemp -d "$SCRATCH/strata-peers-bench.XXXXXX")
HASH_FILE=
cleanup() {
  # Outputs may hold read-only dirs and files owned by others: plain rm -rf as root removes them.
  rm -rf -- "$W"
  [ -z "$HASH_FILE" ] || rm -f -- "$HASH_FILE"
}
REG_PIDS=()
stop_registries() {
  local p
  for p in "${REG_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  pkill -f "docker-registry serve $W/" 2>/dev/null || true
}
trap 'stop_registries; cleanup' EXIT
trap 'exit 130' INT TERM
: >"$W/commands.md"
: >"$W/results.md"
mkdir "$W/old"
SKIPPED=0
LAST_RM=0

# A prepare step that drops the output of the previous run without freeing any inode: the tree
# is renamed into $W/old, deleted at the end of the section (see the header on ext4).
aside() { printf 'if [ -e %s ]; then mv %s %s/old/$(date +%%s%%N); fi' "$1" "$1" "$W"; }

# Deletes the section's outputs; the next disk section waits out the cool-down.
drop_outputs() {
  rm -rf -- "$W/old" "$@"
  mkdir "$W/old"
  sync
  LAST_RM=$(date +%s)
}
cooldown() {
  local left=$((LAST_RM + COOLDOWN - $(date +%s)))
  if ((LAST_RM > 0 && left > 0)); then
    say "   cool-down: ${left}s after the last deletion (ext4 without journal, see the header)"
    sleep "$left"
  fi
}

# Fails unless SCRATCH has at least $1 bytes free.
need_space() {
  local avail; avail=$(df -B1 --output=avail "$SCRATCH" | tail -1 | tr -d ' ')
  ((avail >= $1)) || die "$SCRATCH has $((avail >> 20)) MiB free, this section needs about $(($1 >> 20)) MiB (lower ROUNDS)"
}

# One results row: section | what | command label | median | min | runs | figure | target | verdict
row() { printf '| %s |\n' "$(IFS='|'; echo "$*" | sed 's/|/ | /g')" >>"$W/results.md"; }

skip() { # section reason
  say "== $1: skipped: $2"
  row "$1" "pending" "-" "-" "-" "-" "-" "skipped: $2"
  SKIPPED=1
}

# CPU steal over a section (/proc/stat) and the 1-minute load at its end (other work on the
# machine), so a reader can tell a noisy run.
cpu_snapshot() { awk '/^cpu /{t=0; for(i=2;i<=9;i++) t+=$i; print $9, t}' /proc/stat; }
steal_since() { # "steal total" at start
  local s0 t0 s1 t1; read -r s0 t0 <<<"$1"; read -r s1 t1 < <(cpu_snapshot)
  awk -v a=$((s1 - s0)) -v b=$((t1 - t0)) 'BEGIN{ if (b > 0) printf "%.0f%%", 100*a/b; else printf "?" }'
  printf ', load %s' "$(cut -d' ' -f1 /proc/loadavg)"
}

# alt SECTION LABEL PREPARE COMMAND [LABEL PREPARE COMMAND]...
# ROUNDS rounds; in each, hyperfine runs every command once (its PREPARE untimed just before),
# the order rotated by one per round. The first round starts with one untimed warm-up run of
# each command (page cache warm, binaries loaded).
alt() {
  local section=$1; shift
  local labels=() preps=() cmds=()
  while (($#)); do labels+=("$1"); preps+=("$2"); cmds+=("$3"); shift 3; done
  local n=${#labels[@]} i k r
  {
    echo "**$section**"
    echo
    echo '```sh'
    for i in "${!labels[@]}"; do
      echo "# ${labels[i]}  (before each run: ${preps[i]})"
      echo "${cmds[i]}"
    done
    echo '```'
    echo
  } >>"$W/commands.md"
  for ((r = 0; r < ROUNDS; r++)); do
    local args=() names=() cs=() warm=()
    ((r == 0)) && warm=(--warmup 1)
    for ((k = 0; k < n; k++)); do
      i=$(((k + r) % n))
      args+=(--prepare "${preps[i]}")
      names+=(-n "${labels[i]}")
      cs+=("${cmds[i]}")
    done
    say "-- $section: round $((r + 1))/$ROUNDS"
    hyperfine --style basic "${warm[@]}" --runs 1 "${args[@]}" "${names[@]}" \
      --export-json "$W/$section.$r.json" "${cs[@]}" >&2
  done
}

# stats SECTION LABEL -> "median min runs" in seconds, over all rounds.
stats() {
  jq -rs --arg l "$2" '
    [.[].results[] | select(.command == $l) | .times[]] | sort
    | (length) as $n
    | (if $n % 2 == 1 then .[($n - 1) / 2] else (.[$n / 2 - 1] + .[$n / 2]) / 2 end) as $med
    | "\($med) \(.[0]) \($n)"' "$W/$1".*.json
}
fmt_s() { awk -v x="$1" 'BEGIN{ if (x < 1) printf "%.1f ms", x*1000; else printf "%.2f s", x }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ printf "%.2f", a/b }'; }

have_examples() {
  [ -x "$EXAMPLES/sha256" ] && [ -x "$EXAMPLES/unpack" ]
}
EXAMPLES_MISSING="no $EXAMPLES/{sha256,unpack}: cargo build --release -p strata-store --example sha256 --example unpack"

have_strata() {
  [ -x "$STRATA" ] && "$STRATA" --help >/dev/null 2>&1
}
STRATA_MISSING="no working strata at STRATA=$STRATA (cargo build --release -p strata-cli)"

have_images() { [ -f "$PEERS_IMAGES/oci-full/index.json" ]; }
IMAGES_MISSING="no $PEERS_IMAGES/oci-full (run: bash /work/shared/peers/debian-images.sh)"

# The layer blobs of oci-full's manifest, in order.
layers() {
  local idx=$PEERS_IMAGES/oci-full m
  m=$(jq -r '.manifests[0].digest' "$idx/index.json")
  jq -r '.layers[].digest' "$idx/blobs/sha256/${m#sha256:}" | sed "s|^sha256:|$idx/blobs/sha256/|"
}

# ---------------------------------------------------------------------------------------------
section_hash() {
  have_examples || { skip hash "$EXAMPLES_MISSING"; return; }
  command -v openssl >/dev/null || { skip hash "openssl is missing"; return; }
  local t0; t0=$(cpu_snapshot)
  HASH_FILE=$(mktemp /dev/shm/strata-hash.XXXXXX)
  say "== hash: writing $HASH_MIB MiB of random bytes to $HASH_FILE (tmpfs)"
  head -c "$((HASH_MIB << 20))" /dev/urandom >"$HASH_FILE"
  local a b c
  a=$("$EXAMPLES/sha256" "$HASH_FILE" | awk '{print $1}')
  b=$(sha256sum "$HASH_FILE" | awk '{print $1}')
  c=$(openssl dgst -sha256 -r "$HASH_FILE" | awk '{print $1}')
  [ "$a" = "sha256:$b" ] && [ "$b" = "$c" ] || die "hash: digests differ: strata $a, sha256sum $b, openssl $c"
  alt hash \
    "strata (examples/sha256, mmap)" "true" "$EXAMPLES/sha256 $HASH_FILE" \
    "openssl dgst -sha256" "true" "openssl dgst -sha256 $HASH_FILE" \
    "sha256sum" "true" "sha256sum $HASH_FILE"
  local st; st=$(steal_since "$t0")
  local bytes=$((HASH_MIB << 20)) ref med min n
  read -r ref _ _ <<<"$(stats hash "openssl dgst -sha256")"
  for l in "strata (examples/sha256, mmap)" "openssl dgst -sha256" "sha256sum"; do
    read -r med min n <<<"$(stats hash "$l")"
    local mbs; mbs=$(awk -v b=$bytes -v t="$med" 'BEGIN{ printf "%.0f MB/s", b/t/1e6 }')
    if [[ $l == strata* ]]; then
      local verdict
      verdict=$(awk -v r="$ref" -v m="$med" 'BEGIN{ x=r/m; printf "%.0f%% of openssl: %s", 100*x, (x >= 0.9 ? "PASS" : "FAIL") }')
      row "hash ${HASH_MIB} MiB (tmpfs), steal $st" "$l" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "$mbs" "≥ 90% of openssl" "$verdict"
    else
      row "hash ${HASH_MIB} MiB (tmpfs), steal $st" "$l" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "$mbs" "" "reference"
    fi
  done
  rm -f -- "$HASH_FILE"; HASH_FILE=
}

# ---------------------------------------------------------------------------------------------
section_unpack() {
  have_examples || { skip unpack "$EXAMPLES_MISSING"; return; }
  have_images || { skip unpack "$IMAGES_MISSING"; return; }
  # The biggest layer blob (bytes), and the layer with the most entries (file creation cost).
  local big most l c best=0
  big=$(layers | xargs ls -S | sed -n 1p)
  for l in $(layers); do
    c=$(tar -tzf "$l" | wc -l)
    if ((c > best)); then best=$c; most=$l; fi
  done
  unpack_one unpack "biggest layer" "$big"
  [ "$most" = "$big" ] || unpack_one unpack-files "layer with most entries" "$most"
}

unpack_one() { # section description blob
  local section=$1 desc=$2 blob=$3
  local t0; t0=$(cpu_snapshot)
  local size entries
  size=$(stat_size "$blob")
  entries=$(tar -tzf "$blob" | wc -l)
  say "== $section: $desc of oci-full: $blob ($size bytes, $entries entries)"
  cat "$blob" >/dev/null # page cache warm
  need_space $(((ROUNDS + 1) * 2 * size * 4))
  cooldown
  local S=$W/$section-strata T=$W/$section-tar
  alt "$section" \
    "strata (examples/unpack, overlay)" "$(aside "$S") && sync" "$EXAMPLES/unpack $blob $S" \
    "tar -xzf" "$(aside "$T") && mkdir $T && sync" "tar -xzf $blob -C $T"
  local st; st=$(steal_since "$t0")
  local ref med min n
  read -r ref _ _ <<<"$(stats "$section" "tar -xzf")"
  read -r med min n <<<"$(stats "$section" "strata (examples/unpack, overlay)")"
  local what="unpack 1 layer ($desc: $((size >> 20)) MiB gz, $entries entries), steal $st"
  row "$what" "strata (examples/unpack, overlay)" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "$(ratio "$med" "$ref")× tar" "" ""
  read -r med min n <<<"$(stats "$section" "tar -xzf")"
  row "$what" "tar -xzf" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "1.00× tar" "" "reference"
  drop_outputs "$S" "$T"
}

stat_size() { wc -c <"$1" | tr -d ' '; }

# ---------------------------------------------------------------------------------------------
section_load() {
  have_images || { skip load "$IMAGES_MISSING"; return; }
  have_strata || { skip load "$STRATA_MISSING"; return; }
  command -v umoci >/dev/null || { skip load "umoci is missing (bash /work/shared/peers/setup.sh)"; return; }
  local t0; t0=$(cpu_snapshot)
  local R=$W/load-root T=$W/load-tar B=$W/load-bundle i=0 tars=""
  for l in $(layers); do
    tars+="tar -xzf $l -C $T/$i; "
    i=$((i + 1))
  done
  local mk=""; for ((k = 0; k < i; k++)); do mk+=" $T/$k"; done
  local gz; gz=$(layers | xargs cat | wc -c)
  say "== load: $PEERS_IMAGES/oci-full, $i layers, $((gz >> 20)) MiB compressed"
  layers | xargs cat >/dev/null # page cache warm
  # Per round: strata's store (blobs + snapshots), tar's and umoci's trees, ≈ 3 × 2.5 × gz each.
  need_space $(((ROUNDS + 2) * gz * 9))
  cooldown
  # A check that strata really loads and unpacks the image, before timing it.
  "$STRATA" --root "$R" load -i "$PEERS_IMAGES/oci-full" >&2
  "$STRATA" --root "$R" images >&2
  [ "$(find "$R/snapshots" -mindepth 1 -maxdepth 1 -type d | wc -l)" -ge "$i" ] \
    || die "load: strata load did not leave $i snapshots under $R/snapshots"
  alt load \
    "strata load -i (ingest + unpack)" "$(aside "$R") && sync" "$STRATA --root $R load -i $PEERS_IMAGES/oci-full" \
    "tar -xzf ×$i, serial" "$(aside "$T") && mkdir -p$mk && sync" "$tars" \
    "umoci unpack" "$(aside "$B") && sync" "umoci unpack --image $PEERS_IMAGES/oci-full:full $B"
  local st; st=$(steal_since "$t0")
  local tar umoci med min n
  read -r tar _ _ <<<"$(stats load "tar -xzf ×$i, serial")"
  read -r umoci _ _ <<<"$(stats load "umoci unpack")"
  read -r med min n <<<"$(stats load "strata load -i (ingest + unpack)")"
  local what="load+unpack $i layers, $((gz >> 20)) MiB gz, steal $st"
  local v1 v2
  v1=$(awk -v a="$med" -v b="$tar" 'BEGIN{ printf "%.2f× tar: %s", a/b, (a/b <= 0.6 ? "PASS" : "FAIL") }')
  v2=$(awk -v a="$med" -v b="$umoci" 'BEGIN{ printf "%.2f× umoci: %s", a/b, (a/b <= 0.3 ? "PASS" : "FAIL") }')
  row "$what" "strata load -i (ingest + unpack)" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "≤ 0.6× tar, ≤ 0.3× umoci" "$v1; $v2"
  read -r med min n <<<"$(stats load "tar -xzf ×$i, serial")"
  row "$what" "tar -xzf ×$i, serial" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "" "reference"
  read -r med min n <<<"$(stats load "umoci unpack")"
  row "$what" "umoci unpack" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "" "reference"
  drop_outputs "$R" "$T" "$B"
}

# ---------------------------------------------------------------------------------------------
section_df() {
  have_strata || { skip df "$STRATA_MISSING"; return; }
  [ -d "$PEERS_IMAGES/slim/etc" ] || { skip df "no $PEERS_IMAGES/slim (run: bash /work/shared/peers/debian-images.sh)"; return; }
  local t0; t0=$(cpu_snapshot)
  local R=$W/df-root n=0
  cooldown
  say "== df: building a store of 20 images under $R"
  if have_images; then
    "$STRATA" --root "$R" load -i "$PEERS_IMAGES/oci-full" >&2
    n=1
  fi
  # The rest: 20 slightly different small images, each a copy of slim's /etc plus a file of its own.
  for ((v = n; v < 20; v++)); do
    local d=$W/df-src/$v
    mkdir -p "$d"
    cp -a "$PEERS_IMAGES/slim/etc" "$d/etc"
    echo "variant $v" >"$d/etc/variant"
    "$STRATA" --root "$R" import "$d" "lab/variant:$v" >&2
  done
  rm -rf "$W/df-src"
  local have; have=$("$STRATA" --root "$R" images -q 2>/dev/null | sort -u | wc -l || true)
  say "   the store lists $have image IDs"
  local cmd="$STRATA --root $R system df -v"
  {
    echo "**df** (store: oci-full loaded once + $((20 - n)) images imported from variants of slim's /etc)"
    echo
    echo '```sh'
    echo "$cmd"
    echo '```'
    echo
  } >>"$W/commands.md"
  hyperfine --style basic -N --warmup 3 --runs 30 -n "system df -v" --export-json "$W/df.0.json" "$cmd" >&2
  local st; st=$(steal_since "$t0")
  local med min runs
  read -r med min runs <<<"$(stats df "system df -v")"
  local verdict; verdict=$(awk -v a="$med" 'BEGIN{ printf "%s", (a <= 0.050 ? "PASS" : "FAIL") }')
  row "system df -v, $have images, steal $st" "strata system df -v" "$(fmt_s "$med")" "$(fmt_s "$min")" "$runs" "" "≤ 50 ms" "$verdict"
  drop_outputs "$R"
}


# ---------------------------------------------------------------------------------------------
# A docker-registry (Debian's distribution 2.8) on 127.0.0.1:PORT storing under DIR, in the
# background; prints its pid once it answers.
start_registry() { # PORT DIR
  mkdir -p "$2"
  printf '%s\n' "version: 0.1" "log:" "  level: error" "storage:" "  filesystem:" \
    "    rootdirectory: $2/data" "  delete:" "    enabled: true" "http:" "  addr: 127.0.0.1:$1" \
    "  secret: strata-bench" >"$2/config.yml"
  docker-registry serve "$2/config.yml" >"$2/log" 2>&1 &
  local pid=$! i
  for i in $(seq 100); do
    curl -fs -o /dev/null "http://127.0.0.1:$1/v2/" && break
    sleep 0.05
  done
  echo "$pid"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

have_registry() { command -v docker-registry >/dev/null && command -v skopeo >/dev/null && command -v curl >/dev/null; }
REGISTRY_MISSING="docker-registry, skopeo or curl is missing (bash /work/shared/peers/setup.sh)"
POLICY='{"default":[{"type":"insecureAcceptAnything"}]}'

section_pull() {
  have_images || { skip pull "$IMAGES_MISSING"; return; }
  have_strata || { skip pull "$STRATA_MISSING"; return; }
  have_registry || { skip pull "$REGISTRY_MISSING"; return; }
  command -v podman >/dev/null || { skip pull "podman is missing (bash /work/shared/peers/setup.sh)"; return; }
  local t0; t0=$(cpu_snapshot)
  local port; port=$(free_port)
  REG_PIDS+=("$(start_registry "$port" "$W/pull-registry")")
  echo "$POLICY" >"$W/policy.json"
  local ref=127.0.0.1:$port/bench/full:1
  skopeo --policy "$W/policy.json" copy -q --dest-tls-verify=false "oci:$PEERS_IMAGES/oci-full:full" "docker://$ref" >&2
  local gz; gz=$(layers | xargs cat | wc -c)
  say "== pull: $ref (oci-full, $((gz >> 20)) MiB compressed) from a local docker-registry"
  need_space $(((ROUNDS + 2) * gz * 8))
  cooldown
  local R=$W/pull-root P=$W/pull-podman O=$W/pull-oci
  "$STRATA" --root "$R" pull -q "$ref" >&2
  [ "$(find "$R/snapshots" -mindepth 1 -maxdepth 1 -type d | wc -l)" -ge 6 ] || die "pull: strata did not unpack 6 snapshots"
  # podman with its own storage root per run (overlay driver; the peers' containers.conf).
  local podman="podman --root $P --runroot $W/pull-podman-run --storage-driver overlay"
  export CONTAINERS_CONF=${CONTAINERS_CONF:-/var/tmp/strata-peers/conf/containers.conf}
  alt pull \
    "strata pull (store + unpack)" "$(aside "$R") && sync" "$STRATA --root $R pull -q $ref" \
    "podman pull" "$(aside "$P") && sync" "$podman pull -q --tls-verify=false $ref" \
    "skopeo copy docker:// oci: (no unpack)" "$(aside "$O") && sync" "skopeo --policy $W/policy.json copy -q --src-tls-verify=false docker://$ref oci:$O:x"
  # Re-pull of an image the store has: one HEAD, nothing downloaded.
  "$STRATA" --root "$R" pull -q "$ref" >/dev/null
  {
    echo "**pull of an unchanged image already in the store**"
    echo
    echo '```sh'
    echo "$STRATA --root $R pull -q $ref"
    echo '```'
    echo
  } >>"$W/commands.md"
  hyperfine --style basic -N --warmup 2 --runs 20 -n "re-pull" --export-json "$W/repull.0.json" "$STRATA --root $R pull -q $ref" >&2
  local st; st=$(steal_since "$t0")
  local podman_t skopeo_t med min n
  read -r podman_t _ _ <<<"$(stats pull "podman pull")"
  read -r skopeo_t _ _ <<<"$(stats pull "skopeo copy docker:// oci: (no unpack)")"
  read -r med min n <<<"$(stats pull "strata pull (store + unpack)")"
  local what="pull 6 layers, $((gz >> 20)) MiB gz, steal $st"
  local v1 v2
  v1=$(awk -v a="$med" -v b="$podman_t" 'BEGIN{ printf "%.2f× podman: %s", a/b, (a/b <= 0.2 ? "PASS" : "FAIL") }')
  v2=$(awk -v a="$med" -v b="$skopeo_t" 'BEGIN{ printf "%.2f× skopeo: %s", a/b, (a/b <= 3 ? "PASS" : "FAIL") }')
  row "$what" "strata pull (store + unpack)" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "≤ 0.2× podman, ≤ 3× skopeo" "$v1; $v2"
  read -r med min n <<<"$(stats pull "podman pull")"
  row "$what" "podman pull" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "" "reference"
  read -r med min n <<<"$(stats pull "skopeo copy docker:// oci: (no unpack)")"
  row "$what" "skopeo copy docker:// oci:" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "" "reference"
  read -r med min n <<<"$(stats repull "re-pull")"
  row "re-pull, all layers present" "strata pull" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "≤ 100 ms" \
    "$(awk -v a="$med" 'BEGIN{ print (a <= 0.1 ? "PASS" : "FAIL") }')"
  drop_outputs "$R" "$O" "$P"
}

section_push() {
  have_images || { skip push "$IMAGES_MISSING"; return; }
  have_strata || { skip push "$STRATA_MISSING"; return; }
  have_registry || { skip push "$REGISTRY_MISSING"; return; }
  local t0; t0=$(cpu_snapshot)
  echo "$POLICY" >"$W/policy.json"
  local R=$W/push-root ps pk
  ps=$(free_port); pk=$(free_port)
  cooldown
  "$STRATA" --root "$R" load -i "$PEERS_IMAGES/oci-full" >&2
  local id; id=$("$STRATA" --root "$R" images -q | head -1)
  "$STRATA" --root "$R" tag "$id" "127.0.0.1:$ps/bench/full:1"
  local gz; gz=$(layers | xargs cat | wc -c)
  say "== push: oci-full ($((gz >> 20)) MiB compressed) to an empty local docker-registry"
  # Before each run: a fresh, empty registry (the last one stopped, its storage set aside).
  {
    echo '#!/usr/bin/env bash'
    echo '# fresh-registry.sh PORT DIR: stops the registry serving DIR, sets DIR aside, starts an empty one.'
    echo 'set -e'
    declare -f start_registry
    echo 'pkill -f "docker-registry serve $2/config.yml" 2>/dev/null || true'
    echo 'while pgrep -f "docker-registry serve $2/config.yml" >/dev/null; do sleep 0.02; done'
    echo "[ ! -e \"\$2\" ] || mv \"\$2\" \"$W/old/\$(date +%s%N)\""
    echo 'start_registry "$1" "$2" >/dev/null'
  } >"$W/fresh-registry.sh"
  chmod +x "$W/fresh-registry.sh"
  alt push \
    "strata push" "$W/fresh-registry.sh $ps $W/push-reg-s && sync" "$STRATA --root $R push -q 127.0.0.1:$ps/bench/full:1" \
    "skopeo copy oci: docker://" "$W/fresh-registry.sh $pk $W/push-reg-k && sync" "skopeo --policy $W/policy.json copy -q --dest-tls-verify=false oci:$PEERS_IMAGES/oci-full:full docker://127.0.0.1:$pk/bench/full:1"
  pkill -f "docker-registry serve $W/push-reg-" 2>/dev/null || true
  local st; st=$(steal_since "$t0")
  local sk med min n
  read -r sk _ _ <<<"$(stats push "skopeo copy oci: docker://")"
  read -r med min n <<<"$(stats push "strata push")"
  local what="push 6 layers, $((gz >> 20)) MiB gz, empty registry, steal $st"
  row "$what" "strata push" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "≤ 0.8× skopeo" \
    "$(awk -v a="$med" -v b="$sk" 'BEGIN{ printf "%.2f× skopeo: %s", a/b, (a/b <= 0.8 ? "PASS" : "FAIL") }')"
  read -r med min n <<<"$(stats push "skopeo copy oci: docker://")"
  row "$what" "skopeo copy oci: docker://" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "" "reference"
  drop_outputs "$R"
}
# ---------------------------------------------------------------------------------------------
# Image comparison (issue 5): strata reads both images' file indexes; the peers walk or query
# the two unpacked trees (page cache warm: every command has an untimed warm-up run).
section_compare() {
  have_strata || { skip compare "$STRATA_MISSING"; return; }
  local slim=$PEERS_IMAGES/slim full=$PEERS_IMAGES/full
  [ -d "$slim/etc" ] && [ -d "$full/etc" ] && [ -f "$PEERS_IMAGES/full.tar" ] \
    || { skip compare "no $PEERS_IMAGES/{slim,full,full.tar} (run: bash /work/shared/peers/debian-images.sh)"; return; }
  local ROUNDS=${CMP_ROUNDS:-30}
  local t0; t0=$(cpu_snapshot)
  local R=$W/cmp-root
  cooldown
  say "== compare: importing slim and full (one layer each) and loading full.tar (6 layers) into $R"
  "$STRATA" --root "$R" import "$slim" lab/slim:1 >&2
  "$STRATA" --root "$R" import "$full" lab/fullflat:1 >&2
  "$STRATA" --root "$R" load -i "$PEERS_IMAGES/full.tar" >&2
  local nl; nl=$("$STRATA" --root "$R" inspect lab/full:1 | jq '.[0].RootFS.Layers | length')
  local files; files=$(find "$slim" "$full" -xdev | wc -l)
  alt compare \
    "strata diff" "true" "$STRATA --root $R diff lab/slim:1 lab/fullflat:1 >/dev/null || true" \
    "diff -rq" "true" "diff -rq --no-dereference $slim $full >/dev/null || true" \
    "strata diff --packages" "true" "$STRATA --root $R diff --packages lab/slim:1 lab/fullflat:1 >/dev/null || true" \
    "chroot dpkg --get-selections x2 + diff" "true" \
      "chroot $slim dpkg --get-selections >$W/sel-a; chroot $full dpkg --get-selections >$W/sel-b; diff $W/sel-a $W/sel-b >/dev/null || true" \
    "strata layers" "true" "$STRATA --root $R layers lab/full:1 >/dev/null"
  local st; st=$(steal_since "$t0")
  local med min n ref
  local what="slim vs full ($files paths in both trees), steal $st"
  read -r ref _ _ <<<"$(stats compare "diff -rq")"
  read -r med min n <<<"$(stats compare "strata diff")"
  row "$what" "strata diff A B" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "≤ 0.1× diff -rq" \
    "$(awk -v a="$med" -v b="$ref" 'BEGIN{ printf "%.3f× diff -rq: %s", a/b, (a/b <= 0.1 ? "PASS" : "FAIL") }')"
  read -r med min n <<<"$(stats compare "diff -rq")"
  row "$what" "diff -rq --no-dereference" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "" "reference"
  read -r ref _ _ <<<"$(stats compare "chroot dpkg --get-selections x2 + diff")"
  read -r med min n <<<"$(stats compare "strata diff --packages")"
  row "$what" "strata diff --packages A B" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "≤ 1.0× chroot dpkg" \
    "$(awk -v a="$med" -v b="$ref" 'BEGIN{ printf "%.2f× chroot dpkg: %s", a/b, (a/b <= 1.0 ? "PASS" : "FAIL") }')"
  read -r med min n <<<"$(stats compare "chroot dpkg --get-selections x2 + diff")"
  row "$what" "chroot dpkg --get-selections x2 + diff" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "" "reference"
  read -r med min n <<<"$(stats compare "strata layers")"
  row "layers of full.tar ($nl layers)" "strata layers" "$(fmt_s "$med")" "$(fmt_s "$min")" "$n" "" "≤ 100 ms" \
    "$(awk -v a="$med" 'BEGIN{ printf "%s", (a <= 0.100 ? "PASS" : "FAIL") }')"
  drop_outputs "$R"
}
# ---------------------------------------------------------------------------------------------
START=$(date -u +%Y-%m-%dT%H:%MZ)
for s in "${SECTIONS[@]}"; do "section_$s"; done

cpu=$(awk -F': ' '/^model name/{print $2; exit}' /proc/cpuinfo)
echo "# strata vs peers, $START"
echo
echo "Machine: $(nproc) cores ($cpu), $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r);"
echo "scratch $SCRATCH ($(df -T "$SCRATCH" | awk 'NR==2{print $2}')), $ROUNDS alternating rounds per section, 1 run per command per round."
echo
echo "## Commands"
echo
cat "$W/commands.md"
echo "## Results (median and minimum wall time over all rounds)"
echo
echo "| benchmark | command | median | min | runs | figure | target | verdict |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
cat "$W/results.md"
[ "$SKIPPED" = 0 ] || exit 2
