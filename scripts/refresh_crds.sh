#!/usr/bin/env bash
# Refresh the vendored upstream CRDs: download every file listed in crds/sources.txt into crds/ (or DEST)
# and check each file's git blob id. Edit the commit and blob columns to move to a newer upstream.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/crds}
grep -v '^#' "$root/crds/sources.txt" | while read -r file repo commit path blob; do
  mkdir -p "$dest/$(dirname "$file")"
  curl --fail --silent --show-error --location --retry 3 \
    "https://raw.githubusercontent.com/$repo/$commit/$path" -o "$dest/$file"
  actual=$(git hash-object "$dest/$file")
  if [ "${actual:0:${#blob}}" != "$blob" ]; then
    echo "$file: blob $actual does not match $blob from $repo@$commit:$path" >&2
    exit 1
  fi
done
echo "CRDs in $dest"
