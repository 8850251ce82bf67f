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

# While a backup holds the keystore frozen every change fails with EROFS; say so in those
# words, before trying (and again if a freeze began between this check and the write).
frozen() {
    local q
    q=$(cat "$mount/.quiesce" 2>/dev/null) || return 1
    jq -e -r 'select(.quiesced) | "\(.holds) hold(s) since \(.since)"' <<<"$q" 2>/dev/null
}
refuse_if_frozen() {
    local why
    if why=$(frozen); then
        echo "$0: the keystore is quiesced for a backup ($why); try again after it is released" >&2
        exit 1
    fi
}
refuse_if_frozen

old=$(readlink "$dir/.active" || true)

# A fresh, unused name: key-YYYYmmddTHHMMSSZ, with a suffix if rotated twice in one second.
new="key-$(date -u +%Y%m%dT%H%M%SZ)"
n=1
while [ -e "$dir/$new" ]; do
    n=$((n + 1))
    new="key-$(date -u +%Y%m%dT%H%M%SZ)-$n"
done

# One JSON object makes the record; jq quotes the strings correctly.
if ! err=$(jq -n --arg name "$new" --arg old "${old:-none}" \
    '{name: $name, state: "active", description: ("rotation; replaces " + $old)}' \
    2>&1 > "$dir/.create"); then
    refuse_if_frozen
    echo "$0: cannot create $group/$new: ${err:-jq failed}" >&2
    exit 1
fi

echo "$group/.active -> $(readlink "$dir/.active")"
if [ -n "$old" ]; then
    echo "$group/$old is now $(cat "$dir/$old/state")"
fi
jq -c '{name, tag, state, created}' "$dir/$new/record.json"
