#!/usr/bin/env bash
# Backs up a mounted kmsfs keystore: freeze with a lease, copy, check, release, verify.
#
#   examples/backup.sh MOUNTPOINT DATA_DIR BACKUP_ROOT   (`make install`: kmsfs-backup)
#
# (or set KMSFS_MOUNT, KMSFS_DATA_DIR and KMSFS_BACKUP_ROOT instead of the arguments).
# Each run makes BACKUP_ROOT/kmsfs-YYYYmmddTHHMMSSZ/ holding KMS_DATA and, by default, the key
# files KMS_HMKF and KMS_KPKF. Settings (environment):
#
#   KMSFS_LEASE=600     longest the keystore may stay frozen, in seconds. The freeze is a hold
#                       with this lease: if this job dies (even by SIGKILL) the hold lapses by
#                       itself and changes resume. A copy that outlives the lease is discarded.
#   KMSFS_KEYS_DIR=DIR  put the key files in DIR/kmsfs-STAMP/ instead of next to KMS_DATA (keep
#                       them on other media than the data backups: whoever has KMS_DATA and both
#                       key files has every key). KMSFS_KEYS_DIR=none: do not copy them at all
#                       (they never change after `kmsfs init`; back them up once, offline).
#   KMSFS=kmsfs         the kmsfs binary, for `kmsfs verify` (default: kmsfs on PATH; `make
#                       install` puts both in /usr/local/sbin).
#   KMSFS_UNLOCK="..."  options `kmsfs verify` needs for master keys kept off the disk (README
#                       "Master keys"), e.g. "--hmk-passphrase-file /root/hmk.pass" or
#                       "--tcti device:/dev/tpmrm0"; split on blanks. A key kept as a
#                       passphrase has no key file: only KMS_DATA and the existing key files
#                       (plain or sealed) are copied.
#
# Exit status 0 only if the copy is complete, was taken under one unbroken freeze, and passes
# `kmsfs verify`. On any failure, or SIGINT/SIGTERM/SIGHUP, the hold is released, the partial
# copy removed, and the exit status is non-zero. For cron, as root (or the mounting user); cron's
# PATH is short, so name where kmsfs and jq are:
#
#   PATH=/usr/local/sbin:/usr/local/bin:/usr/bin:/bin
#   30 2 * * *  kmsfs-backup /mnt/kms /var/lib/kmsfs /backup/kmsfs
#
# Pruning old backups is left to you (e.g. `find /backup/kmsfs -maxdepth 1 -name 'kmsfs-*'
# -mtime +30 -exec rm -rf {} +`).
set -euo pipefail
umask 077

me=${0##*/}
say() { printf '%s: %s\n' "$me" "$*"; }
die() { printf '%s: error: %s\n' "$me" "$*" >&2; exit 1; }
usage() {
    echo "usage: $me MOUNTPOINT DATA_DIR BACKUP_ROOT (or KMSFS_MOUNT, KMSFS_DATA_DIR, KMSFS_BACKUP_ROOT)" >&2
    exit 2
}

case $# in
    0) mount=${KMSFS_MOUNT:-}; data_dir=${KMSFS_DATA_DIR:-}; root=${KMSFS_BACKUP_ROOT:-} ;;
    3) mount=$1; data_dir=$2; root=$3 ;;
    *) usage ;;
esac
[[ -n $mount && -n $data_dir && -n $root ]] || usage
lease=${KMSFS_LEASE:-600}
keys_dir=${KMSFS_KEYS_DIR:-}
kmsfs=${KMSFS:-kmsfs}

for tool in jq cp cmp sync date "$kmsfs"; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (or not on PATH)"
done
[[ $lease =~ ^[1-9][0-9]*$ ]] || die "KMSFS_LEASE=$lease is not a whole number of seconds"

# ---- checks before anything is frozen ---------------------------------------------------

[[ -f $mount/.quiesce && -f $mount/.status ]] \
    || die "$mount is not a kmsfs mount (no .quiesce): is the daemon running?"
[ -f "$data_dir/KMS_DATA" ] || die "$data_dir holds no keystore (no KMS_DATA)"
served=$(jq -r .data_dir "$mount/.status") || die "cannot read $mount/.status"
real_data=$(realpath -e "$data_dir")
[ "$(realpath -e "$served")" = "$real_data" ] \
    || die "$mount serves $served, not $data_dir: refusing to copy a keystore that is not frozen"

stamp=$(date -u +%Y%m%dT%H%M%SZ)
name="kmsfs-$stamp"
mkdir -p -- "$root" || die "cannot create $root"
dest="$root/$name"
partial="$dest.partial"
[[ ! -e $dest && ! -e $partial ]] || die "$dest already exists"
read -r -a unlock <<<"${KMSFS_UNLOCK:-}"
# The key files this keystore has: none for a key kept as a passphrase at every start.
key_files=()
info=$("$kmsfs" info --json --data-dir "$data_dir") || die "kmsfs info cannot read $data_dir"
for k in hmk kpk; do
    kept=$(jq -r ".$k.kept" <<<"$info")
    file=$([ "$k" = hmk ] && echo KMS_HMKF || echo KMS_KPKF)
    case $kept in
        passphrase) ;;
        missing) die "$file is missing from $data_dir: $(jq -r ".$k.needs" <<<"$info")" ;;
        *) key_files+=("$file") ;;
    esac
done
case $keys_dir in
    "")   keys_dest=$dest; keys_partial=$partial ;;
    none) keys_dest=""; keys_partial="" ;;
    *)    mkdir -p -- "$keys_dir" || die "cannot create $keys_dir"
          keys_dest="$keys_dir/$name"; keys_partial="$keys_dest.partial"
          [[ ! -e $keys_dest && ! -e $keys_partial ]] || die "$keys_dest already exists" ;;
esac

# ---- freeze, copy, release (the trap releases on every way out) --------------------------

held=""          # the expiry of our lease, as .quiesce lists it, while we hold it
child=""         # the copy running in the background
verify_dir=""
finalizing=""    # set once the copies start moving to their final names
done_ok=""

# Releases our hold if it is still ours to release: if our lease already lapsed, an
# `unquiesce` would take someone else's hold.
release() {
    [ -n "$held" ] || return 0
    local mine=$held
    held=""
    if [ ! -f "$mount/.quiesce" ]; then
        printf '%s: warning: %s is no longer mounted; nothing to release\n' "$me" "$mount" >&2
    elif jq -e --arg l "$mine" 'any(.leases[]; . == $l)' "$mount/.quiesce" >/dev/null 2>&1; then
        if ! echo unquiesce > "$mount/.quiesce"; then
            printf '%s: error: cannot release the freeze; it lapses by itself at %s\n' "$me" "$mine" >&2
            return 1
        fi
    else
        printf '%s: warning: our lease (until %s) had already lapsed; nothing to release\n' "$me" "$mine" >&2
    fi
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$child" ]; then
        kill "$child" 2>/dev/null || true
        wait "$child" 2>/dev/null || true
    fi
    release || rc=1
    [ -z "$verify_dir" ] || rm -rf -- "$verify_dir"
    if [ -z "$done_ok" ]; then
        [ $rc -ne 0 ] || rc=1
        rm -rf -- "$partial"
        [ -z "$keys_partial" ] || rm -rf -- "$keys_partial"
        if [ -n "$finalizing" ]; then
            rm -rf -- "$dest"
            [ -z "$keys_dest" ] || rm -rf -- "$keys_dest"
        fi
        printf '%s: backup FAILED (exit %d); nothing was kept, and the keystore is not frozen by this job\n' "$me" "$rc" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# Runs a command in the background and waits for it, so that a signal is acted on at once
# (bash runs traps only between commands) and the trap can stop the command.
run() {
    "$@" &
    child=$!
    wait "$child"
    child=""
}

# Our lease is the last one listed right after our `quiesce` (holds are listed in the order
# they were taken). A signal between taking the hold and learning its lease would leave a hold
# the trap cannot name: signals are held back until `held` is set, then acted on.
pending=""
trap 'pending=130' INT
trap 'pending=143' TERM
trap 'pending=129' HUP
echo "quiesce $lease" > "$mount/.quiesce" || die "cannot freeze the keystore (echo quiesce $lease > $mount/.quiesce)"
state=$(cat "$mount/.quiesce")
held=$(jq -r '.leases[-1] // empty' <<<"$state")
since=$(jq -r '.since // empty' <<<"$state")
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP
[ -z "$pending" ] || exit "$pending"
[[ -n $held && -n $since ]] || die "unexpected .quiesce after freezing: $state"
say "frozen since $since (lease of $lease s, until $held)"

mkdir -- "$partial"
run cp -a -- "$data_dir/KMS_DATA" "$partial/"
if [ -n "$keys_partial" ]; then
    mkdir -p -- "$keys_partial"
    [ ${#key_files[@]} -eq 0 ] || run cp -a -- "${key_files[@]/#/$data_dir/}" "$keys_partial/"
fi

# Still the same freeze? Otherwise the files may have changed while they were copied.
state=$(cat "$mount/.quiesce") \
    || die "cannot read $mount/.quiesce after the copy (did the daemon stop?): the copy cannot be trusted"
if ! jq -e --arg since "$since" '.quiesced and .since == $since' >/dev/null <<<"$state"; then
    die "the freeze did not last through the copy (our lease of $lease s lapsed?): the copy may be inconsistent and was discarded; raise KMSFS_LEASE"
fi
# Complete copies: byte for byte what the frozen keystore holds.
cmp -- "$data_dir/KMS_DATA" "$partial/KMS_DATA" || die "the copy of KMS_DATA differs from the original"
if [ -n "$keys_partial" ]; then
    for f in "${key_files[@]}"; do
        cmp -- "$data_dir/$f" "$keys_partial/$f" || die "the copy of $f differs from the original"
    done
fi
release
say "released the freeze"

# ---- verify the copy offline, then make it final --------------------------------------------

# `kmsfs verify` wants the three files in one directory: copy them together in a scratch one
# (copies, not symbolic links: kmsfs never follows a link in a data directory). The scratch
# directory goes where the key files already are, so that they are never copied anywhere else
# (not to $TMPDIR): beside the backup when they are kept with it, into KMSFS_KEYS_DIR when they
# are kept apart, into the live data directory when they are not copied at all.
case "$keys_dir" in
    "")   verify_parent=$root ;;
    none) verify_parent=$real_data ;;
    *)    verify_parent=$keys_dir ;;
esac
verify_dir=$(mktemp -d "$verify_parent/.kmsfs-verify.XXXXXX")
cp -- "$partial/KMS_DATA" "$verify_dir/KMS_DATA"
for f in "${key_files[@]}"; do
    if [ -n "$keys_partial" ]; then
        cp -- "$keys_partial/$f" "$verify_dir/$f"
    else
        cp -- "$real_data/$f" "$verify_dir/$f"
    fi
done
report=$("$kmsfs" verify --data-dir "$verify_dir" "${unlock[@]}") || die "kmsfs verify rejected the copy"
rm -rf -- "$verify_dir"
verify_dir=""

# Durable before it is called complete: the files, then the renames into place.
finalizing=1
sync -- "$partial"/*
mv -- "$partial" "$dest"
sync -- "$root"
if [ -n "$keys_partial" ] && [ "$keys_partial" != "$partial" ]; then
    sync -- "$keys_partial"/*
    mv -- "$keys_partial" "$keys_dest"
    sync -- "$keys_dir"
fi
done_ok=1
say "backup complete: $dest (${report#ok: })"
if [ -z "$keys_dir" ]; then
    say "note: the key files are stored next to KMS_DATA; set KMSFS_KEYS_DIR to keep them apart"
elif [ "$keys_dir" != none ]; then
    say "key files: $keys_dest"
fi
