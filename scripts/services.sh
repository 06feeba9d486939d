#!/usr/bin/env bash
# System packages the tests start as real servers (Redis). Installs them with apt when missing and root.
set -euo pipefail
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server is missing: install it (e.g. apt-get install redis-server); Redis tests will be skipped" >&2
  fi
fi
