#!/usr/bin/env bash
# Rotates the key of a key group with shell commands only.
#
#   examples/rotate.sh MOUNT GROUP
#
# A new record is created directly in state `active` through GROUP/.create; in the same atomic
# step the keystore moves the previous active record to `inactive` (it can still decrypt what
# it encrypted). No reader ever sees two active keys, or none.
set -euo pipefail

usage() { echo "usage: $0 MOUNT GROUP" >&2; exit 2; }
[ $# -eq 2 ] || usage
mount=$1
group=$2
dir="$mount/$group"
[ -d "$dir" ] || { echo "$0: no group \"$group\" in $mount" >&2; exit 1; }

old=$(readlink "$dir/.active" || true)

# A fresh, unused name: key-YYYYmmddTHHMMSSZ, with a suffix if rotated twice in one second.
new="key-$(date -u +%Y%m%dT%H%M%SZ)"
n=1
while [ -e "$dir/$new" ]; do
    n=$((n + 1))
    new="key-$(date -u +%Y%m%dT%H%M%SZ)-$n"
done

# One JSON object makes the record; jq quotes the strings correctly.
jq -n --arg name "$new" --arg old "${old:-none}" \
    '{name: $name, state: "active", description: ("rotation; replaces " + $old)}' \
    > "$dir/.create"

echo "$group/.active -> $(readlink "$dir/.active")"
if [ -n "$old" ]; then
    echo "$group/$old is now $(cat "$dir/$old/state")"
fi
jq -c '{name, tag, state, created}' "$dir/$new/record.json"
