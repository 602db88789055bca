#!/usr/bin/env bash
# agent_metrics.sh — what host metrics cost: keel-agent collecting and
# pushing every second, against Debian's prometheus-node-exporter scraped
# every second by curl, each alone on this host for DURATION seconds.
# Prints CPU and memory side by side and the ratios; never passes or fails
# (exit 1 only when it could not measure, 2 on usage).
#
#   bench/agent_metrics.sh [BIN_DIR]   # default build/bin: keeld, keel-agent,
#                                      # bench-metrics-sink
#
# The agent is enrolled with a real keeld, then pushes to bench-metrics-sink
# (a stand-in keeld that answers 200 and decodes every batch), so what is
# measured is the steady state: collect, encode, sign, send.
#
# DURATION (default 60) and WARMUP (default 3) are seconds; PROCESSES
# (e.g. "sshd nginx") adds --process flags to the agent; NODE_EXPORTER
# (default /usr/bin/prometheus-node-exporter).
#
# CPU is user + system time over the measured window, from
# /proc/PID/schedstat summed over the threads (nanoseconds; node_exporter's
# threads live as long as it does) and, as a cross-check, from
# /proc/PID/stat (clock ticks, dead threads included).  Memory is at the
# end: VmRSS and VmHWM, RssAnon (private), and Pss (shared pages split
# between the processes mapping them, e.g. libc).
set -u
set -o pipefail

BIN=${1:-build/bin}
DURATION=${DURATION:-60}
WARMUP=${WARMUP:-3}
PROCESSES=${PROCESSES:-}
NE=${NODE_EXPORTER:-/usr/bin/prometheus-node-exporter}
for p in keeld keel-agent bench-metrics-sink; do
  if [ ! -x "$BIN/$p" ]; then
    echo "usage: $0 [BIN_DIR]   ($BIN/$p not found)" >&2
    exit 2
  fi
done
if [ ! -x "$NE" ]; then
  echo "agent_metrics: $NE not found (apt-get install prometheus-node-exporter)" >&2
  exit 2
fi
BIN=$(cd "$BIN" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-agent-metrics.XXXXXX")
PIDS=()

stop_pid() {
  local p=$1
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
}
cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
  rm -rf "$TMP"
}
trap cleanup EXIT

die() {
  echo "agent_metrics: $*" >&2
  for f in "$TMP"/*.log; do
    [ -s "$f" ] && { echo "--- $f:" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}

# ---- enrollment with a real keeld ----------------------------------------
"$BIN/keeld" init --data "$TMP/srv" >"$TMP/init.log" 2>&1 || die "keeld init failed"
"$BIN/keeld" --data "$TMP/srv" --listen 127.0.0.1:0 >"$TMP/keeld.log" 2>&1 &
KEELD=$!
PIDS+=("$KEELD")
for _ in $(seq 100); do
  [ -s "$TMP/srv/keeld.url" ] && break
  kill -0 "$KEELD" 2>/dev/null || die "keeld exited"
  sleep 0.1
done
URL=$(head -n 1 "$TMP/srv/keeld.url") || die "keeld did not write keeld.url"
ADMIN=$(tr -d '\n' <"$TMP/srv/admin.token")
for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done
ENROLL=$(curl -sS -f -X POST -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
  --data-binary '{"uses":1}' "$URL/v1/agent-tokens" | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
[ -n "$ENROLL" ] || die "cannot create an enrollment token"
"$BIN/keel-agent" --server "$URL" --state "$TMP/agent" --enroll-token "$ENROLL" --no-metrics \
  >"$TMP/enroll.log" 2>&1 &
AGENT=$!
for _ in $(seq 100); do
  [ -s "$TMP/agent/identity.json" ] && break
  kill -0 "$AGENT" 2>/dev/null || die "keel-agent exited while enrolling"
  sleep 0.1
done
[ -s "$TMP/agent/identity.json" ] || die "the agent did not enroll"
stop_pid "$AGENT"
stop_pid "$KEELD"

# ---- measuring -------------------------------------------------------------
# cpu_ns PID: user + system nanoseconds of the live threads.
cpu_ns() {
  cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%d", s }'
}
# cpu_ticks PID: utime + stime clock ticks (dead threads included).
cpu_ticks() {
  sed 's/^.*) //' /proc/"$1"/stat | awk '{ print $12 + $13 }'
}
status_kb() { awk -v k="$2:" '$1 == k { print $2 }' /proc/"$1"/status; }
pss_kb() { awk '$1 == "Pss:" { print $2 }' /proc/"$1"/smaps_rollup 2>/dev/null || echo 0; }
HZ=$(getconf CLK_TCK)

# measure NAME PID WORK_CMD: runs WORK_CMD (a function, once per second) for
# DURATION seconds after WARMUP, then records the figures as NAME_*.
measure() {
  local name=$1 pid=$2 work=$3 n0 t0 end next
  for _ in $(seq "$WARMUP"); do $work; sleep 1; done
  n0=$(cpu_ns "$pid")
  t0=$(cpu_ticks "$pid")
  end=$(($(date +%s%N) + DURATION * 1000000000))
  next=$(date +%s%N)
  while [ "$(date +%s%N)" -lt "$end" ]; do
    kill -0 "$pid" 2>/dev/null || die "$name exited"
    $work
    next=$((next + 1000000000))
    local now
    now=$(date +%s%N)
    [ "$next" -gt "$now" ] && sleep "$(awk -v d=$((next - now)) 'BEGIN { printf "%.3f", d / 1e9 }')"
  done
  eval "${name}_cpu=$(awk -v a="$(cpu_ns "$pid")" -v b="$n0" 'BEGIN { printf "%.3f", (a - b) / 1e9 }')"
  eval "${name}_tick=$(awk -v a="$(cpu_ticks "$pid")" -v b="$t0" -v hz="$HZ" 'BEGIN { printf "%.2f", (a - b) / hz }')"
  eval "${name}_rss=$(status_kb "$pid" VmRSS)"
  eval "${name}_hwm=$(status_kb "$pid" VmHWM)"
  eval "${name}_anon=$(status_kb "$pid" RssAnon)"
  eval "${name}_pss=$(pss_kb "$pid")"
}

nothing() { :; }

# keel-agent against the sink.
"$BIN/bench-metrics-sink" >"$TMP/sink.out" 2>"$TMP/sink.log" &
SINK=$!
PIDS+=("$SINK")
for _ in $(seq 50); do [ -s "$TMP/sink.out" ] && break; sleep 0.1; done
SINK_URL=$(head -n 1 "$TMP/sink.out")
[ -n "$SINK_URL" ] || die "bench-metrics-sink did not start"
PFLAGS=()
for p in $PROCESSES; do PFLAGS+=(--process "$p"); done
"$BIN/keel-agent" --server "$SINK_URL" --state "$TMP/agent" --interval 1s "${PFLAGS[@]}" \
  >"$TMP/agent.log" 2>&1 &
AGENT=$!
PIDS+=("$AGENT")
measure agent "$AGENT" nothing
stop_pid "$AGENT"
stop_pid "$SINK"
SINK_TOTALS=$(tail -n 1 "$TMP/sink.out")

# node_exporter, scraped every second.
PORT=""
for try in $(seq 20); do
  p=$((20000 + RANDOM % 20000))
  "$NE" --web.listen-address="127.0.0.1:$p" >"$TMP/node_exporter.log" 2>&1 &
  NEP=$!
  for _ in $(seq 30); do curl -sf -o /dev/null "http://127.0.0.1:$p/metrics" && break; sleep 0.1; done
  if kill -0 "$NEP" 2>/dev/null && curl -sf -o /dev/null "http://127.0.0.1:$p/metrics"; then
    PORT=$p
    break
  fi
  stop_pid "$NEP"
done
[ -n "$PORT" ] || die "node_exporter did not start"
PIDS+=("$NEP")
scrape() { curl -sf -o /dev/null "http://127.0.0.1:$PORT/metrics"; }
measure ne "$NEP" scrape
curl -sf "http://127.0.0.1:$PORT/metrics" | grep -v '^#' >"$TMP/ne.txt"
stop_pid "$NEP"

# Same names and labels as node_exporter, series by series.
"$BIN/keel-agent" --print-metrics >"$TMP/agent.txt" 2>/dev/null
sed 's/ [^ ]*$//' "$TMP/agent.txt" | sort >"$TMP/agent.keys"
sed 's/ [^ ]*$//' "$TMP/ne.txt" | sort >"$TMP/ne.keys"
ours=$(wc -l <"$TMP/agent.keys")
same=$(comm -12 "$TMP/agent.keys" "$TMP/ne.keys" | wc -l)

echo "host metrics cost, ${DURATION}s at a 1s interval ($(nproc) CPUs, $(uname -r))"
echo "  keel-agent: $BIN/keel-agent --interval 1s${PROCESSES:+ (--process $PROCESSES)}, pushing to bench-metrics-sink"
echo "  sink took: $SINK_TOTALS"
echo "  node_exporter: $("$NE" --version 2>&1 | head -n 1 | sed 's/ (branch.*//'), scraped by curl"
printf '%-16s %9s %9s %10s %10s %10s %10s %10s\n' "" "cpu_s" "cpu_s(tk)" "cpu_ms/s" "VmRSS_KiB" \
  "VmHWM_KiB" "Anon_KiB" "Pss_KiB"
for w in agent ne; do
  eval "c=\$${w}_cpu t=\$${w}_tick r=\$${w}_rss h=\$${w}_hwm a=\$${w}_anon s=\$${w}_pss"
  printf '%-16s %9s %9s %10s %10s %10s %10s %10s\n' \
    "$([ $w = agent ] && echo keel-agent || echo node_exporter)" "$c" "$t" \
    "$(awk -v c="$c" -v d="$DURATION" 'BEGIN { printf "%.2f", c * 1000 / d }')" "$r" "$h" "$a" "$s"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.3f", a / b; else printf "-" }'; }
printf '%-16s %9s %9s %10s %10s %10s %10s %10s\n' "agent/exporter" \
  "$(ratio "$agent_cpu" "$ne_cpu")" "$(ratio "$agent_tick" "$ne_tick")" "" \
  "$(ratio "$agent_rss" "$ne_rss")" "$(ratio "$agent_hwm" "$ne_hwm")" \
  "$(ratio "$agent_anon" "$ne_anon")" "$(ratio "$agent_pss" "$ne_pss")"
echo "names: $same of the agent's $ours node_* series are node_exporter's, name and labels exact"
