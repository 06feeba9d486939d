#!/usr/bin/env bash
# System programs the tests use for real: Redis (started by the test fixtures), Prometheus's promtool
# (checks the alert rules), the Prometheus Pushgateway (the monitor pushes its figures to it) and etcd
# (under the real Kubernetes API server of tests/kubeharness/envtest.py) and a Java runtime (the Spark
# engine's embedded local[*] session).
# Installs the missing ones with apt when running as root.
set -euo pipefail
missing=()
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
command -v prometheus-pushgateway >/dev/null 2>&1 || missing+=(prometheus-pushgateway)
command -v etcd >/dev/null 2>&1 || missing+=(etcd-server)
command -v java >/dev/null 2>&1 || missing+=(default-jre-headless)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing ${missing[*]}: install them (apt-get install ${missing[*]}); their tests will be skipped" >&2
fi
