#!/usr/bin/env bash
# cli_metrics.sh — keel metrics query and keel top against a real Prometheus
# (the API keeld's /api/v1/query copies) scraping a real node_exporter every
# second: instant, range, scalar and string answers, --json as the server
# sent it, Prometheus' own error text with exit 1, usage errors with exit 2,
# the host table (instance alone: Prometheus has no agent_id), --target
# translated into label matchers, and the live redraw on a terminal.
. "$(dirname "$0")/lib.sh" "${1:-}"

PROMETHEUS=$(command -v prometheus) || fail "prometheus not installed: scripts/deps.sh must install the Debian package prometheus"
NODE_EXPORTER=$(command -v prometheus-node-exporter) ||
  fail "prometheus-node-exporter not installed: scripts/deps.sh must install the Debian package prometheus-node-exporter"
command -v jq >/dev/null || fail "jq not installed (scripts/deps.sh installs it)"
command -v script >/dev/null || fail "script not installed (Debian package bsdutils)"

start_listener node_exporter /metrics "$NODE_EXPORTER" --web.listen-address=127.0.0.1:@PORT
NE=127.0.0.1:$LPORT
cat >"$TMP/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: node
    static_configs:
      - targets: ['$NE']
EOF
start_listener prometheus /-/ready "$PROMETHEUS" --config.file="$TMP/prometheus.yml" \
  --storage.tsdb.path="$TMP/tsdb" --web.listen-address=127.0.0.1:@PORT
URL=http://127.0.0.1:$LPORT
PROM_PID=$LPID
TOKEN=x           # Prometheus ignores it; the CLI insists on one
KEELD_LOG=$TMP/prometheus.log # lib.sh's fail shows its tail

# At least 6 good scrapes: the first is over 4 s old (the range query below
# wants 5 points, from a whole second) and irate has two samples to work with.
good_scrapes() {
  local n
  n=$(curl -s --max-time 2 -G "$URL/api/v1/query" --data-urlencode "query=sum_over_time(up{job=\"node\"}[1m])" |
    jq -r '.data.result[0].value[1] // "0"') || return 1
  [ "${n%%.*}" -ge 6 ] 2>/dev/null
}
wait_for 30 good_scrapes || fail "Prometheus did not scrape node_exporter 6 times in 30 s: $(tail -n 5 "$TMP/node_exporter.log")"

assert_rc() { # WANT WHAT
  [ "$KRC" = "$1" ] || fail "$2: exit status $KRC, want $1; stdout: $(printf '%.400s' "$KOUT"); stderr: $(printf '%.400s' "$KERR")"
  check
}
# lines TEXT — how many lines TEXT has
lines() { printf '%s' "$1" | grep -c '' || true; }
UP_ROW="^up\\{instance=\"$NE\",job=\"node\"\\} +1$"
TS='[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z'

# ---- metrics query: instant ----------------------------------------------------------------
kc metrics query up
assert_rc 0 "metrics query up"
assert_match "$(printf '%s\n' "$KOUT" | head -n 1)" '^SERIES +VALUE$' "table header"
assert_match "$KOUT" "$UP_ROW" "the up series, name first, then the labels sorted"
assert_eq "$KERR" "" "stderr of a good query"

kc metrics query '1+1' # '+' must reach the server encoded, not as a space
assert_rc 0 "metrics query 1+1"
assert_eq "$KOUT" 2 "a scalar prints its value"
kc metrics query '"a b&c=d"'
assert_rc 0 "string query"
assert_eq "$KOUT" "a b&c=d" "a string prints as is"
kc metrics query 'sum(up{job="node"})'
assert_rc 0 "sum(up)"
assert_match "$KOUT" '^\{\} +1$' "a series without labels"

kc metrics query up --time "$(date +%s)"
assert_rc 0 "--time unix seconds"
assert_match "$KOUT" "$UP_ROW" "--time unix seconds"
kc metrics query up --time "$(date -u -d '-1 second' +%Y-%m-%dT%H:%M:%S.5Z)"
assert_rc 0 "--time RFC 3339"
assert_match "$KOUT" "$UP_ROW" "--time RFC 3339"
kc metrics query up --time 1000000000
assert_rc 0 "--time before any data"
assert_eq "$KOUT" "$(printf 'SERIES  VALUE')" "no series: only the header"

kc --json metrics query up
assert_rc 0 "--json"
assert_eq "$(printf '%s' "$KOUT" | jq -r '.status + " " + .data.resultType + " " + .data.result[0].metric.instance')" \
  "success vector $NE" "--json: the server's answer"
# as sent: Prometheus' float timestamps keep their digits (no re-encoding)
assert_match "$KOUT" '"value":\[[0-9]+(\.[0-9]{1,3})?,"1"\]' "--json keeps the server's text"

# ---- metrics query: range ----------------------------------------------------------------------
END=$(date +%s)
kc metrics query up --range 4s --step 1s --end "$END"
assert_rc 0 "range query"
assert_match "$(printf '%s\n' "$KOUT" | head -n 1)" "^up\\{instance=\"$NE\",job=\"node\"\\}$" "range: the series' header line"
assert_eq "$(printf '%s\n' "$KOUT" | grep -cE "^  $TS  1$")" 5 "range: 5 'time value' lines, 1 s apart"
assert_contains "$KOUT" "  $(date -u -d "@$END" +%Y-%m-%dT%H:%M:%S).000Z  1" "range: the last point is at --end"
kc metrics query 'rate(node_cpu_seconds_total{mode="idle"}[3s])' --range 30s
assert_rc 0 "range query, default step"
assert_match "$KOUT" "^\\{cpu=\"0\",instance=\"$NE\",job=\"node\",mode=\"idle\"\\}$" "range: a series without a name"
kc --json metrics query up --range 10s --step 2s
assert_rc 0 "range --json"
assert_eq "$(printf '%s' "$KOUT" | jq -r '.data.resultType')" matrix "range --json: a matrix"
assert_eq "$(printf '%s' "$KOUT" | jq -r '(.data.result[0].values[1][0] - .data.result[0].values[0][0]) * 1000 | round')" 2000 "range --json: step 2s"

# ---- metrics query: errors -------------------------------------------------------------------
kc metrics query 'sum(up'
assert_rc 1 "a bad query"
assert_eq "$KOUT" "" "stdout of a bad query"
assert_eq "$(lines "$KERR")" 1 "one line on stderr ($KERR)"
assert_match "$KERR" '^keel: invalid parameter "query": 1:7: parse error: .*\(HTTP 400 bad_data\)$' "Prometheus' error and errorType"
kc metrics query 'nosuchfunc(up)'
assert_rc 1 "an unknown function"
assert_contains "$KERR" 'unknown function with name "nosuchfunc"' "Prometheus' error text"
kc metrics query up --range 1000d --step 1s
assert_rc 1 "too many points"
assert_contains "$KERR" "11,000 points" "Prometheus' resolution limit"

kc metrics query
assert_rc 2 "no EXPR"
kc metrics query up --step 5s
assert_rc 2 "--step without --range"
assert_contains "$KERR" "--step needs --range" "--step without --range"
kc metrics query up --range 1h --time 5
assert_rc 2 "--time with --range"
kc metrics query up --time yesterday
assert_rc 2 "bad --time"
assert_contains "$KERR" "RFC 3339 or unix seconds" "bad --time"
kc metrics query up --range 5parsecs
assert_rc 2 "bad --range"

# ---- top -----------------------------------------------------------------------------------
# host_row — the row of node_exporter's instance in KOUT
host_row() { printf '%s\n' "$KOUT" | awk -v h="$NE" '$1 == h'; }

kc top --once
assert_rc 0 "top --once"
assert_match "$(printf '%s\n' "$KOUT" | head -n 1)" '^HOST +AGENT +CPU% +LOAD1 +MEM% +DISK% +NET RX/TX +DISK R/W$' "top header"
ROW=$(host_row)
assert_ne "$ROW" "" "top: a row for $NE in: $KOUT"
# HOST AGENT CPU% LOAD1 MEM% ...: no agent_id in Prometheus, so AGENT is "-"
assert_match "$ROW" "^$NE +- +[0-9]+\\.[0-9] +[0-9]+\\.[0-9]{2} +[0-9]+\\.[0-9] " "top: CPU%, LOAD1 and MEM% of the host"
assert_eq "$(lines "$KOUT")" 2 "top: header and one host"

kc top # stdout is not a terminal: one table, then exit
assert_rc 0 "top, not on a terminal"
assert_ne "$(host_row)" "" "top, not on a terminal: the host row"
assert_not_contains "$KOUT" $'\033' "top, not on a terminal: no escapes"

kc --json top --once
assert_rc 0 "top --json"
assert_eq "$(printf '%s' "$KOUT" | jq -r '.hosts[0].instance')" "$NE" "top --json: instance"
assert_eq "$(printf '%s' "$KOUT" | jq -r '.hosts[0].agent_id')" null "top --json: no agent_id"
assert_eq "$(printf '%s' "$KOUT" | jq -r '.hosts[0].cpu_percent | type')" number "top --json: cpu_percent"

# --target becomes label matchers: Prometheus' series have no env label, so
# env=prod matches nothing and env!=prod everything.
kc top --once --target env=prod
assert_rc 0 "top --target env=prod"
assert_eq "$(host_row)" "" "top --target env=prod: no host"
kc top --once --target ' env != prod , role notin (web,api.v2) '
assert_rc 0 "top --target env!=prod"
assert_ne "$(host_row)" "" "top --target env!=prod: the host"
kc top --once --target "hostname in ($NE)" # hostname is the instance label
assert_rc 0 "top --target hostname in (...)"
assert_ne "$(host_row)" "" "top --target hostname in (...): the host"
kc top --once --target env
assert_rc 2 "top --target env (tag present)"
assert_contains "$KERR" "no exact metric-label form" "untranslatable selector"
kc top --once --target 'team.payments/owner=x'
assert_rc 2 "top --target with a key that is no label name"
assert_contains "$KERR" "not a metric label name" "key that is no label name"
kc top --interval 10ms
assert_rc 2 "top --interval 10ms"

# On a terminal: redrawn in place until Ctrl-C, which ends it with status 0.
script -qfec "stty rows 20 cols 100; timeout --preserve-status -s INT 3 $(printf '%q' "$KEEL") --server $URL --token x top" \
  "$TMP/tty.out" >/dev/null 2>&1
KRC=$?
KOUT=$(tr -d '\r' <"$TMP/tty.out")
KERR=""
assert_rc 0 "top on a terminal, ended by SIGINT"
assert_contains "$KOUT" $'\033[H' "top on a terminal: cursor home before each frame"
assert_contains "$KOUT" $'\033[J' "top on a terminal: rest of the screen cleared"
assert_match "$KOUT" "keel top  $URL  [0-9]{2}:[0-9]{2}:[0-9]{2}  every 1s  1 host" "top on a terminal: title"
[ "$(printf '%s' "$KOUT" | grep -o "keel top  $URL" | wc -l)" -ge 2 ] || fail "top on a terminal: fewer than 2 frames in 3 s: $KOUT"
check

# Prometheus gone: exit 1 with the transport error.
kill -TERM "$PROM_PID"
wait "$PROM_PID" 2>/dev/null
kc top --once
assert_rc 1 "top with the server gone"
assert_contains "$KERR" "cannot reach $URL" "top with the server gone"
kc metrics query up
assert_rc 1 "metrics query with the server gone"
finish
