#!/usr/bin/env bash
# tsdb.sh — metrics end to end with real peers: a keel-agent collecting
# every second pushes host metrics; keeld scrapes a real
# prometheus-node-exporter and a target that is not an exposition; the
# Prometheus query API answers PromQL over both (shape and sanity of
# rate(node_cpu_seconds_total[1m]) and friends, Prometheus' error shape,
# series/labels endpoints); keel metrics query reads it; a kill -9 of keeld
# while batches stream in loses no acknowledged sample.
. "$(dirname "$0")/lib.sh" "${1:-}"

NODE_EXPORTER=${NODE_EXPORTER:-/usr/bin/prometheus-node-exporter}
[ -x "$NODE_EXPORTER" ] || fail "$NODE_EXPORTER is missing: scripts/deps.sh installs prometheus-node-exporter"

D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s
export KEEL_SERVER=$URL KEEL_TOKEN=$TOKEN
PORT=${URL##*:}

# q EXPR — instant query; BODY holds the answer
q() { req GET "/api/v1/query?query=$(jq -rn --arg v "$1" '$v|@uri')"; }
nres() { printf '%s' "$BODY" | jq '.data.result | length'; }

# ---- an agent pushing host metrics every second --------------------------------------------
kc agent token create --uses 2 --tags env=dev,team.name=ops
ET=$(printf '%s\n' "$KOUT" | tail -n 1)
start_agent h1 --enroll-token "$ET" --interval 1s
wait_enrolled h1
A1=$AID
have_rate() {
  q 'rate(node_cpu_seconds_total[1m])'
  [ "$(nres)" -gt 0 ] 2>/dev/null
}
wait_for 20 have_rate || fail "no rate(node_cpu_seconds_total[1m]) after 20 s: $BODY"
check
assert_eq "$(printf '%s' "$BODY" | jq -r '.status + " " + .data.resultType')" "success vector" "Prometheus' answer shape"
NCPU=$(getconf _NPROCESSORS_ONLN)
assert_eq "$(printf '%s' "$BODY" | jq "[.data.result[] | select(.metric.mode == \"idle\")] | length")" "$NCPU" "one idle series per CPU"
assert_eq "$(printf '%s' "$BODY" | jq -r '[.data.result[].metric | .instance != null and .agent_id != null and .env == "dev" and .team_name == "ops" and .cpu != null and .mode != null] | all')" true "keeld's labels: instance, agent_id, the tags (team.name as team_name)"
assert_eq "$(printf '%s' "$BODY" | jq '[.data.result[].metric.__name__] | map(select(. != null)) | length')" 0 "rate drops the metric name"
assert_eq "$(printf '%s' "$BODY" | jq '[.data.result[].value[1] | tonumber | select(. < 0 or . > 1.5)] | length')" 0 "every per-mode CPU rate is between 0 and 1.5 s/s"
# sums need a window well covered by samples: wait for 12 s of data
enough() {
  q 'count_over_time(node_load1[1m]) >= 12'
  [ "$(nres)" = 1 ]
}
wait_for 30 enough || fail "fewer than 12 samples in a minute at --interval 1s: $BODY"
check
q 'sum by (instance) (rate(node_cpu_seconds_total[10s]))'
assert_eq "$(nres)" 1 "sum by instance: one host"
TOTAL=$(printf '%s' "$BODY" | jq -r '.data.result[0].value[1]')
assert_eq "$(jq -n --argjson t "$TOTAL" --argjson n "$NCPU" '$t > 0.5 * $n and $t < 1.5 * $n')" true "all modes of all CPUs add up to about one second per second per CPU ($TOTAL for $NCPU)"
q '1 - node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes'
assert_eq "$(printf '%s' "$BODY" | jq '[.data.result[].value[1] | tonumber | select(. > 0 and . < 1)] | length')" 1 "memory used share is a fraction"
q 'node_filesystem_avail_bytes{mountpoint="/"} <= bool node_filesystem_size_bytes{mountpoint="/"}'
assert_eq "$(printf '%s' "$BODY" | jq -r '[.data.result[].value[1]] | unique | join(",")')" 1 "avail <= size on /"
q 'increase(node_context_switches_total[30s]) > 0'
assert_eq "$(nres)" 1 "context switches increase"

# ---- scraping a real node_exporter and a target that is no exposition -------------------------
# the collectors the checks below use: the others (systemd, udev, ...) can
# take seconds on a busy or container host
start_listener node_exporter /metrics "$NODE_EXPORTER" --web.listen-address=127.0.0.1:@PORT \
  --collector.disable-defaults --collector.cpu --collector.loadavg --collector.meminfo \
  --collector.filesystem --collector.netdev --collector.stat --collector.time
NE_PORT=$LPORT
cat >"$TMP/scrape.yaml" <<EOF
kind: ScrapeConfig
scrape_configs:
  - job_name: node
    scrape_interval: 1s
    scrape_timeout: 900ms
    static_configs: [{targets: ["127.0.0.1:$NE_PORT"]}]
  - job_name: notprom
    scrape_interval: 1s
    scrape_timeout: 900ms
    metrics_path: /healthz
    static_configs: [{targets: ["127.0.0.1:$PORT"]}]
EOF
kc apply -f "$TMP/scrape.yaml" --dry-run
assert_eq "$KRC" 0 "dry run of the scrape configuration: $KERR"
req GET /v1/metrics/targets
assert_eq "$(printf '%s' "$BODY" | jq '.targets | length')" 0 "a dry run configures nothing"
kc apply -f "$TMP/scrape.yaml"
assert_eq "$KRC" 0 "apply the scrape configuration: $KERR"
kc apply -f "$TMP/scrape.yaml"
assert_contains "$KOUT" "no changes" "applying it again changes nothing"
targets_known() {
  req GET /v1/metrics/targets
  [ "$(printf '%s' "$BODY" | jq '[.targets[] | select(.health != "unknown")] | length')" = 2 ]
}
wait_for 15 targets_known || fail "targets never scraped: $BODY"
check
assert_eq "$(printf '%s' "$BODY" | jq -r '.targets[] | select(.job == "node") | .health')" up "node_exporter is up"
assert_eq "$(printf '%s' "$BODY" | jq -r '.targets[] | select(.job == "notprom") | .health')" down "a non-exposition target is down"
assert_contains "$(printf '%s' "$BODY" | jq -r '.targets[] | select(.job == "notprom") | .last_error')" "line 1" "with the parser's reason"
q 'up'
assert_eq "$(printf '%s' "$BODY" | jq -r '[.data.result[] | .metric.job + "=" + .value[1]] | sort | join(" ")')" "node=1 notprom=0" "up is recorded for both"
q 'scrape_duration_seconds{job="node"}'
assert_eq "$(nres)" 1 "scrape_duration_seconds is recorded"
have_scraped_rate() {
  q 'sum(rate(node_cpu_seconds_total{job="node"}[10s])) and on() (count_over_time(up{job="node"}[1m]) >= 12)'
  [ "$(nres)" = 1 ]
}
wait_for 30 have_scraped_rate || fail "no rate over the scraped node_exporter: $BODY"
check
# the same host seen both ways agrees within reason
SCRAPED=$(printf '%s' "$BODY" | jq -r '.data.result[0].value[1]')
assert_eq "$(jq -n --argjson t "$SCRAPED" --argjson n "$NCPU" '$t > 0.5 * $n and $t < 1.5 * $n')" true "node_exporter's CPU seconds add up too ($SCRAPED)"

# ---- the rest of the query API -------------------------------------------------------------
req GET "/api/v1/query_range?query=node_load1&start=$(( $(date +%s) - 10 ))&end=$(date +%s)&step=2"
assert_eq "$(printf '%s' "$BODY" | jq -r '.data.resultType')" matrix "query_range answers a matrix"
assert_eq "$(printf '%s' "$BODY" | jq '.data.result[0].values | length > 1')" true "with several points"
req POST /api/v1/query "query=count(up)"
assert_status 400 "a form body needs its content type"
STATUS=$(curl -s -o "$TMP/f.out" -w '%{http_code}' -H "Authorization: Bearer $TOKEN" --data-urlencode 'query=count(up)' "$URL/api/v1/query")
assert_eq "$STATUS" 200 "form POST, as Grafana sends"
assert_eq "$(jq -r '.data.result[0].value[1]' "$TMP/f.out")" 2 "count(up) over the form body"
q 'sum(rate(node_cpu_seconds_total[1m])'
assert_status 400 "a parse error is a 400"
assert_eq "$(printf '%s' "$BODY" | jq -r '.status + " " + .errorType')" "error bad_data" "in Prometheus' error shape"
q 'foo[5m] offset'
assert_eq "$(printf '%s' "$BODY" | jq -r .errorType)" bad_data "a dangling offset"
req GET "/api/v1/series?match%5B%5D=up"
assert_eq "$(printf '%s' "$BODY" | jq '.data | length')" 2 "series of up"
req GET /api/v1/labels
assert_contains "$BODY" '"agent_id"' "labels lists keeld's labels"
req GET /api/v1/label/job/values
assert_eq "$(printf '%s' "$BODY" | jq -c .data)" '["node","notprom"]' "label values of job"
req GET "/api/v1/query?query=up" "" ""
assert_status 401 "the query API needs a token"
make_user vic viewer
req GET "/api/v1/query?query=up" "" "$UTOKEN"
assert_status 200 "a viewer may read metrics"
kc metrics query 'up{job="node"}'
assert_eq "$KRC" 0 "keel metrics query against keeld: $KERR"
assert_contains "$KOUT" 'up{instance="127.0.0.1:'"$NE_PORT"'",job="node"}' "shows the series"

# ---- kill -9 during ingest loses no acknowledged sample --------------------------------------
stop_agent h1
"$BIN/mpush" "$URL" "$TMP/agent-h1" 300 20 >"$TMP/push.out" 2>"$TMP/push.err" &
PUSH=$!
_PIDS+=("$PUSH")
sleep 2
stop_keeld KILL
sleep 0.5
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s
wait "$PUSH" || fail "mpush acknowledged nothing: $(cat "$TMP/push.err")"
ACKED=$(grep -c '^acked' "$TMP/push.out")
FAILED=$(grep -c '^failed' "$TMP/push.out")
[ "$FAILED" -gt 0 ] || fail "keeld was never down during the pushes"
check
NOW=$(( $(date +%s) + 2 )) # past the last push, whole seconds
req GET "/api/v1/query?query=keel_test_seq%5B10m%5D&time=$NOW"
printf '%s' "$BODY" | jq -r '.data.result[0].values[][0] | . * 1000 | round' | sort -n >"$TMP/stored"
grep '^acked' "$TMP/push.out" | awk '{print $2}' | sort -n >"$TMP/acked"
MISSING=$(comm -23 "$TMP/acked" "$TMP/stored" | wc -l)
assert_eq "$MISSING" 0 "all $ACKED acknowledged samples survived kill -9 ($FAILED pushes failed while keeld was down)"
finish
