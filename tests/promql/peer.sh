#!/usr/bin/env bash
# PromQL peer check: runs every query of QUERIES.tsv against a real
# Prometheus and against keel's engine over the same samples, and compares
# the answers (peer_eval compare prints each difference).
#
#   peer.sh PEER_EVAL QUERIES.tsv
#
# 1. peer_eval gen writes a few dozen series as OpenMetrics (counters with
#    resets, gauges with NaN, classic histograms, a series with a gap longer
#    than the lookback, label collisions);
# 2. promtool tsdb create-blocks-from openmetrics turns it into TSDB blocks;
# 3. prometheus serves them on a free 127.0.0.1 port (no scrape targets);
# 4. curl asks /api/v1/query and /api/v1/query_range for each query;
# 5. peer_eval compare evaluates the same queries over the same file.
set -euo pipefail

peer_eval=$1
queries=$2

fail() { echo "promql_peer: $*" >&2; exit 1; }

for b in prometheus promtool curl; do
  command -v "$b" >/dev/null || fail "$b not found (scripts/deps.sh installs Debian's prometheus and curl)"
done
promtool tsdb create-blocks-from openmetrics --help >/dev/null 2>&1 ||
  fail "this promtool has no 'tsdb create-blocks-from openmetrics'"

work=$(mktemp -d)
prom_pid=
cleanup() {
  if [ -n "$prom_pid" ]; then
    kill "$prom_pid" 2>/dev/null || true
    wait "$prom_pid" 2>/dev/null || true
  fi
  if [ -n "${PEER_KEEP:-}" ]; then echo "promql_peer: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT

"$peer_eval" gen "$work/data.om"
mkdir -p "$work/tsdb" "$work/answers"
if ! promtool tsdb create-blocks-from openmetrics "$work/data.om" "$work/tsdb" >"$work/promtool.log" 2>&1; then
  cat "$work/promtool.log" >&2
  fail "promtool could not import the OpenMetrics data"
fi

cat >"$work/prometheus.yml" <<'EOF'
global:
  scrape_interval: 1h
EOF

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

started=
for attempt in 1 2 3 4 5; do
  port=$((20000 + (RANDOM * 7 + attempt * 131) % 40000))
  port_free "$port" || continue
  prometheus --config.file="$work/prometheus.yml" \
    --storage.tsdb.path="$work/tsdb" \
    --storage.tsdb.retention.time=100y \
    --web.listen-address="127.0.0.1:$port" \
    --log.level=warn >"$work/prometheus.log" 2>&1 &
  prom_pid=$!
  for _ in $(seq 1 300); do
    if curl -fsS "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1; then
      started=1
      break
    fi
    kill -0 "$prom_pid" 2>/dev/null || break
    sleep 0.2
  done
  [ -n "$started" ] && break
  kill "$prom_pid" 2>/dev/null || true
  wait "$prom_pid" 2>/dev/null || true
  prom_pid=
  if ! grep -q "address already in use" "$work/prometheus.log"; then
    echo "---- prometheus log ----" >&2
    cat "$work/prometheus.log" >&2
    fail "prometheus did not start (see its log above)"
  fi
done
[ -n "$started" ] || fail "prometheus did not start: no free port found"

base="http://127.0.0.1:$port/api/v1"
lineno=0
nq=0
while IFS= read -r line || [ -n "$line" ]; do
  lineno=$((lineno + 1))
  case "$line" in '' | '#'*) continue ;; esac
  IFS=$'\t' read -r kind a b c d <<<"$line"
  out="$work/answers/$lineno.json"
  case "$kind" in
    i | io) curl -sS -o "$out" "$base/query" --data-urlencode "query=$b" --data-urlencode "time=$a" ;;
    r) curl -sS -o "$out" "$base/query_range" --data-urlencode "query=$d" \
         --data-urlencode "start=$a" --data-urlencode "end=$b" --data-urlencode "step=$c" ;;
    *) fail "$queries:$lineno: unknown kind '$kind'" ;;
  esac
  nq=$((nq + 1))
done <"$queries"
echo "promql_peer: asked Prometheus $(prometheus --version 2>&1 | head -1 | awk '{print $3}') $nq queries"

"$peer_eval" compare "$work/data.om" "$queries" "$work/answers"
