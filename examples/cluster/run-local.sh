#!/usr/bin/env bash
# Several OpenGME nodes on this machine, sharing one Redis, one PostgreSQL and (optionally) one S3
# bucket: the quickest way to see a cluster work. Each node gets its own port and data directory.
#
#   examples/cluster/run-local.sh [NODES]        (default 3; Ctrl-C stops them all)
#
# Settings come from the environment, as for `opengme serve`:
#   OPENGME_REDIS_URL     (default redis://127.0.0.1:6379/0)
#   OPENGME_DATABASE_URL  (default postgresql://127.0.0.1:5432/opengme — created if missing)
#   OPENGME_STORAGE_URL   (default empty: each node's files; set an s3:// URL to share voice messages)
#   BASE_PORT             (default 8090: nodes listen on 8090, 8091, …)
#   DATA_ROOT             (default ./opengme-cluster: node directories under it)
set -euo pipefail

nodes=${1:-3}
case $nodes in ''|*[!0-9]*) echo "usage: $0 [NODES]  (a whole number of nodes, got '$nodes')" >&2; exit 2;; esac
[ "$nodes" -ge 1 ] || { echo "usage: $0 [NODES]  (at least 1)" >&2; exit 2; }
opengme=${OPENGME:-$(command -v opengme || echo "$(dirname "$0")/../../.venv/bin/opengme")}
[ -x "$opengme" ] || { echo "no opengme command: run 'make serve' once (it creates .venv) or put opengme on PATH" >&2; exit 1; }
opengme=$(realpath "$opengme")
export OPENGME_REDIS_URL=${OPENGME_REDIS_URL:-redis://127.0.0.1:6379/0}
export OPENGME_DATABASE_URL=${OPENGME_DATABASE_URL:-postgresql://127.0.0.1:5432/opengme}
base_port=${BASE_PORT:-8090}
data_root=${DATA_ROOT:-opengme-cluster}

if [[ $OPENGME_DATABASE_URL == postgresql://127.0.0.1:5432/opengme ]] && command -v psql >/dev/null; then
  psql -h 127.0.0.1 -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'opengme'" 2>/dev/null | grep -q 1 \
    || psql -h 127.0.0.1 -d postgres -qc "CREATE DATABASE opengme" 2>/dev/null || true
fi

pids=()
stop() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop INT TERM EXIT
for ((i = 0; i < nodes; i++)); do
  port=$((base_port + i))
  mkdir -p "$data_root/node$i"
  "$opengme" serve --port "$port" --data-dir "$data_root/node$i" --log-format text \
    2>>"$data_root/node$i/server.log" > >(sed -u "s/^/[node$i] /") &
  pids+=($!)  # the server's own pid (the prefixing sed ends with it)
done
echo "started $nodes nodes on ports $base_port-$((base_port + nodes - 1)); logs in $data_root/node*/server.log; Ctrl-C stops them"
echo "the CLI reaches this cluster's apps with: export OPENGME_REDIS_URL='$OPENGME_REDIS_URL' OPENGME_DATABASE_URL='$OPENGME_DATABASE_URL'"
wait
