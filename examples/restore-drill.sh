#!/usr/bin/env bash
# Restore drill: proves that a backup can be restored and served, without touching the backup
# or the live keystore.
#
#   examples/restore-drill.sh BACKUP_DIR [KEYS_DIR]   (`make install`: kmsfs-restore-drill)
#
# BACKUP_DIR holds KMS_DATA (a directory made by backup.sh, or any copy of a data directory);
# the key files KMS_HMKF and KMS_KPKF are taken from KEYS_DIR if given, else from BACKUP_DIR.
# The drill copies the three files into a scratch directory (below $TMPDIR), runs
# `kmsfs verify` on them, mounts them on a scratch mount point, lists every group and record
# with its state, checks that the listing agrees with .status and that every usable key reads
# back with the cipher's length, unmounts, and removes the scratch directory.
# Exit status 0 only if all of that worked. Settings: KMSFS (the binary, default kmsfs on PATH);
# KMSFS_UNLOCK: options `kmsfs verify` and `kmsfs mount` need for master keys kept off the disk
# (e.g. "--hmk-passphrase-file /root/hmk.pass", "--tcti device:/dev/tpmrm0"; README "Master
# keys"); a key kept as a passphrase needs no key file.
set -euo pipefail
umask 077

me=${0##*/}
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }
[[ $# -ge 1 && $# -le 2 ]] || { echo "usage: $me BACKUP_DIR [KEYS_DIR]" >&2; exit 2; }
backup=$1
keys=${2:-$1}
kmsfs=${KMSFS:-kmsfs}
for tool in jq cp "$kmsfs"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (or not on PATH)"
done

[ -f "$backup/KMS_DATA" ] || die "$backup holds no KMS_DATA"
read -r -a unlock <<<"${KMSFS_UNLOCK:-}"
# Which key files the copy needs: none for a key kept as a passphrase at every start.
info=$("$kmsfs" info --json --data-dir "$backup") || die "kmsfs info cannot read $backup"
key_files=()
for k in hmk kpk; do
    f=$([ "$k" = hmk ] && echo KMS_HMKF || echo KMS_KPKF)
    [ "$(jq -r ".$k.kept" <<<"$info")" = passphrase ] && [ ! -f "$keys/$f" ] && continue
    [ -f "$keys/$f" ] || die "$f is not in $keys: give the directory of the key files as KEYS_DIR (or regenerate them: kmsfs regenerate)"
    key_files+=("$f")
done

scratch=$(realpath "$(mktemp -d "${TMPDIR:-/tmp}/kmsfs-drill.XXXXXX")")
data="$scratch/data"
mnt="$scratch/mnt"
daemon=""

is_mounted() { grep -qs " $mnt " /proc/self/mounts; }

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$daemon" ]; then
        kill -TERM "$daemon" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$daemon" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$daemon" 2>/dev/null || true
        wait "$daemon" 2>/dev/null || true
    fi
    if is_mounted; then
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
    fi
    rm -rf -- "$scratch"
    [ $rc -eq 0 ] || printf '%s: restore drill FAILED (exit %d)\n' "$me" "$rc" >&2
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# 1. Restore into a scratch directory (copies: the backup itself is never opened for writing).
mkdir -m 700 -- "$data" "$mnt"
cp -a -- "$backup/KMS_DATA" "$data/"
[ ${#key_files[@]} -eq 0 ] || cp -a -- "${key_files[@]/#/$keys/}" "$data/"

# 2. Offline check: every file authenticates, the keys belong to KMS_DATA.
"$kmsfs" verify --data-dir "$data" "${unlock[@]}" || die "kmsfs verify rejected the backup"

# 3. Serve it.
"$kmsfs" mount --data-dir "$data" "${unlock[@]}" "$mnt" 2>"$scratch/mount.log" &
daemon=$!
for _ in $(seq 1 200); do
    [ -e "$mnt/.status" ] && break
    if ! kill -0 "$daemon" 2>/dev/null; then
        wait "$daemon" || true
        daemon=""
        cat "$scratch/mount.log" >&2
        die "kmsfs mount of the restored copy failed"
    fi
    sleep 0.1
done
[ -e "$mnt/.status" ] || { cat "$scratch/mount.log" >&2; die "the restored copy was not served within 20 s"; }

# 4. What it holds.
jq -r '"keystore: \(.groups) group(s), \(.records) record(s), format \(.format_version), HMK \(.hmk_id), KPK \(.kpk_id)"' "$mnt/.status"
groups=0
records=0
shopt -s nullglob
for g in "$mnt"/*/; do
    groups=$((groups + 1))
    jq -r '"group \(.name)  cipher \(.cipher)  records \(.records)  active \(.active // "-")"' "$g/.group.json"
    for r in "$g"*/; do
        records=$((records + 1))
        jq -r '"  \(.group)/\(.name)  \(.state)  tag \(.tag)\(if .passphrase_derived then "  passphrase-derived" else "" end)"' "$r/record.json"
        state=$(cat "$r/state")
        if [ "$state" = active ] || [ "$state" = inactive ]; then
            cipher=$(jq -r .cipher "$r/record.json")
            want=$(( ${cipher#AES_} / 8 ))
            got=$(wc -c < "$r/key")
            [ "$got" -eq "$want" ] || die "${r#"$mnt"/}: key of $got bytes for $cipher"
        fi
    done
done
tags=$(find "$mnt/.by-tag" -mindepth 1 -maxdepth 1 | wc -l)
jq -e --argjson g "$groups" --argjson r "$records" '.groups == $g and .records == $r' "$mnt/.status" >/dev/null \
    || die "the listing ($groups groups, $records records) disagrees with .status"
[ "$tags" -eq "$records" ] || die ".by-tag lists $tags keys for $records records"

# 5. Unmount: the daemon must exit cleanly.
kill -TERM "$daemon"
rc=0
wait "$daemon" || rc=$?
daemon=""
[ $rc -eq 0 ] || { cat "$scratch/mount.log" >&2; die "kmsfs mount exited with status $rc"; }
! is_mounted || die "$mnt is still mounted after the daemon exited"

echo "restore drill passed: $groups group(s), $records record(s) from $backup"
