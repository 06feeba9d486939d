#!/usr/bin/env bash
# Download the upstream CRDs listed in .github/crd-sources.txt into DEST (default: ../shared/crds beside
# the repository, where tests/crds.py looks) and check each file's git blob id.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dest=${1:-$root/../shared/crds}
grep -v '^#' "$root/.github/crd-sources.txt" | while read -r file repo commit path blob; do
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
