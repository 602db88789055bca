#!/usr/bin/env bash
# storm.sh — an event storm against the automation guards: 500 simulated
# hosts (enrolled for real by tests/tools/evstorm, each request signed)
# report service.down all at once, twice.  Two rules react:
#   storm-limited   cooldown 10m, max_runs_per_hour 20
#   storm-each      cooldown 1h,  max_runs_per_hour 10000
# Checked: the hourly limit holds exactly (20 runs, the rest skipped
# rate_limit), every host runs once per rule and never twice within its
# cooldown (the second wave is all skipped), every event is recorded, and
# keeld stays responsive: /healthz is timed all through the storm and its
# latency printed; then the reaction time from an acknowledged event to
# its remediation job at the agent (figures only).
. "$(dirname "$0")/lib.sh" "${1:-}"
N=500
EVSTORM=$BIN/evstorm
[ -x "$EVSTORM" ] || fail "no evstorm in $BIN"

D=$TMP/data
init_data "$D"
# the simulated hosts never poll: a long heartbeat keeps them online
start_keeld "$D" --heartbeat 60s
export KEEL_SERVER=$URL KEEL_TOKEN=$TOKEN

cat >"$TMP/runbook.yaml" <<'EOF'
kind: Runbook
name: storm-fix
owner: {team: ops}
parameters: [{name: host, type: string, required: true}]
targets: "hostname={{ params.host }}"
steps:
  - {name: wait, sleep: 1s}
EOF
rule() { # NAME COOLDOWN MAX
  cat >"$TMP/$1.yaml" <<EOF
kind: AutomationRule
name: $1
team: ops
on: {type: service.down, match: "storm=1,service=web"}
run: {runbook: storm-fix, params: {host: "{{ labels.instance }}"}}
cooldown: $2
max_runs_per_hour: $3
EOF
  kc apply -f "$TMP/$1.yaml"
  assert_eq "$KRC" 0 "apply $1: $KERR"
}
kc apply -f "$TMP/runbook.yaml"
assert_eq "$KRC" 0 "apply the runbook: $KERR"
rule storm-limited 10m 20
rule storm-each 1h 10000

req POST /v1/agent-tokens "{\"ttl\":\"1h\",\"uses\":$N}"
assert_status 201 "an enrollment token"
"$EVSTORM" enroll "$URL" "$(jget token)" "$N" "$TMP/hosts" || fail "evstorm enroll failed"
assert_eq "$(wc -l <"$TMP/hosts" | tr -d ' ')" "$N" "every simulated host enrolled"

# healthz_start FILE — times GET /healthz, 200 a second on one keep-alive
# connection, into FILE until healthz_stop
healthz_start() {
  stdbuf -oL curl -s --rate 200/s --max-time 120 -o /dev/null -w '%{time_total} %{http_code}\n' \
    "$URL/healthz#[1-24000]" >"$1" &
  HZ=$!
  _PIDS+=("$HZ")
}
healthz_stop() {
  kill "$HZ" 2>/dev/null
  wait "$HZ" 2>/dev/null
}
# latency FILE WHAT — prints p50/p99/max of the timings and checks every answer was 200
latency() {
  local n
  n=$(wc -l <"$1" | tr -d ' ')
  [ "$n" -gt 0 ] || fail "no /healthz timing during $2"
  # a request cut short by healthz_stop is no failure of keeld's
  sed -i '/ 000$/d' "$1"
  awk '$2 != 200 { bad++ } END { exit bad > 0 }' "$1" || fail "/healthz failed during $2: $(grep -v ' 200$' "$1" | head -3)"
  sort -n "$1" | awk -v what="$2" '{ t[NR] = $1 } END {
    printf "storm: /healthz during %s: %d requests, p50 %.1f ms, p99 %.1f ms, max %.1f ms\n", what, NR,
      1000 * t[int(NR * 0.5) + (NR * 0.5 > int(NR * 0.5))], 1000 * t[int(NR * 0.99) + (NR * 0.99 > int(NR * 0.99))], 1000 * t[NR] }'
  MAXMS=$(sort -n "$1" | tail -n 1 | awk '{ printf "%d", $1 * 1000 }')
}
runs() { # JQ-FILTER
  sql "$D" "SELECT COUNT(*) FROM automation_runs WHERE $1"
}
settled() { [ "$(runs "1=1")" -ge "$1" ]; }

# ---- wave 1: 500 hosts down at once -------------------------------------------------------
healthz_start "$TMP/hz1"
T0=$(date +%s%3N)
"$EVSTORM" post "$URL" "$TMP/hosts" service.down web || fail "evstorm post failed"
wait_for 60 settled $((2 * N)) || fail "the rules did not judge every event: $(runs "1=1") of $((2 * N))"
T1=$(date +%s%3N)
healthz_stop
echo "storm: wave 1: $N events judged by 2 rules in $((T1 - T0)) ms (post to last run recorded)"
latency "$TMP/hz1" "wave 1"
[ "$MAXMS" -lt 2000 ] || fail "keeld answered /healthz after $MAXMS ms during the storm"
check
assert_eq "$(runs "rule = 'storm-limited' AND outcome = 'triggered'")" 20 "storm-limited ran max_runs_per_hour times"
assert_eq "$(runs "rule = 'storm-limited' AND outcome = 'skipped' AND guard = 'rate_limit'")" $((N - 20)) "the rest skipped: rate_limit"
assert_eq "$(runs "rule = 'storm-each' AND outcome = 'triggered'")" "$N" "storm-each ran once per host"
assert_eq "$(sql "$D" "SELECT COUNT(*) FROM executions WHERE cause = 'automation/storm-limited'")" 20 "20 executions of storm-limited"
assert_eq "$(sql "$D" "SELECT COUNT(*) FROM executions WHERE cause = 'automation/storm-each'")" "$N" "$N executions of storm-each"

# ---- wave 2: the same hosts again: every one inside its cooldown ---------------------------
# After the executions ended and the loop guard's grace (5 s) is over, so
# that cooldown (not the loop guard: these hosts' events while a run of the
# same rule is on them are its own) is what holds them.
x_left() { [ "$(sql "$D" "SELECT COUNT(*) FROM executions WHERE state NOT IN ('succeeded','failed','cancelled','timed_out')")" = 0 ]; }
wait_for 60 x_left || fail "executions still running: $(sql "$D" "SELECT state, COUNT(*) FROM executions GROUP BY state")"
sleep 5.5
healthz_start "$TMP/hz2"
"$EVSTORM" post "$URL" "$TMP/hosts" service.down web || fail "evstorm post (wave 2) failed"
wait_for 60 settled $((4 * N)) || fail "the rules did not judge the second wave: $(runs "1=1")"
healthz_stop
latency "$TMP/hz2" "wave 2"
assert_eq "$(runs "outcome = 'triggered'")" $((N + 20)) "the second wave started nothing"
assert_eq "$(runs "rule = 'storm-each' AND guard = 'cooldown'")" "$N" "storm-each: every host in its cooldown"
assert_eq "$(runs "rule = 'storm-limited' AND guard = 'cooldown'")" 20 "storm-limited: the hosts it ran for, in cooldown"
assert_eq "$(runs "rule = 'storm-limited' AND guard = 'rate_limit'")" $((2 * (N - 20))) "storm-limited: the others, over the limit"
DUP=$(sql "$D" "SELECT COUNT(*) FROM (SELECT rule, target FROM automation_runs WHERE outcome = 'triggered' GROUP BY rule, target HAVING COUNT(*) > 1)")
assert_eq "$DUP" 0 "no runbook ran twice for the same target within its cooldown"
assert_eq "$(sql "$D" "SELECT COUNT(*) FROM events WHERE type = 'service.down'")" $((2 * N)) "every event recorded"
assert_eq "$(sql "$D" "SELECT COUNT(*) FROM events WHERE type LIKE 'automation.%'")" $((4 * N)) "every judgement an automation event"

assert_eq "$(sql "$D" "SELECT COUNT(*) FROM executions WHERE state = 'succeeded'")" $((N + 20)) "every execution succeeded"
# ---- reaction: an event acknowledged (durable) -> the rule's job at the agent ---------------
# One host per trigger, its long-poll held by keeld when its service.down
# goes (evstorm react); figures only: a time never fails the test.
cat >"$TMP/job.yaml" <<'EOF'
kind: Runbook
name: storm-job
owner: {team: ops}
parameters: [{name: host, type: string, required: true}]
targets: "hostname={{ params.host }}"
steps:
  - {name: run, command: {argv: ["true"]}}
EOF
kc apply -f "$TMP/job.yaml"
assert_eq "$KRC" 0 "apply storm-job: $KERR"
rule storm-react 0s 10000
sed -i 's/runbook: storm-fix/runbook: storm-job/' "$TMP/storm-react.yaml"
kc apply -f "$TMP/storm-react.yaml"
assert_eq "$KRC" 0 "storm-react runs storm-job: $KERR"
"$EVSTORM" react "$URL" "$TMP/hosts" 200 web || fail "evstorm react: some trigger got no job"
assert_eq "$(runs "rule = 'storm-react' AND outcome = 'triggered'")" 200 "storm-react: one run per trigger"

req GET "/v1/automation/runs?rule=storm-limited&limit=5"
assert_status 200 "GET /v1/automation/runs"
assert_eq "$(printf '%s' "$BODY" | jq '.items | length')" 5 "runs are paged"

# ---- one execution over every host: its events stay bounded ------------------------------
# (an event's data is at most 16 KiB; 500 targets listed would be ~40 KiB,
# and the execution could then never start)
cat >"$TMP/all.yaml" <<'EOF'
kind: Runbook
name: storm-all
owner: {team: ops}
targets: "storm=1"
steps:
  - {name: wait, sleep: 1s}
EOF
kc apply -f "$TMP/all.yaml"
assert_eq "$KRC" 0 "apply storm-all: $KERR"
req POST /v1/executions '{"runbook":"storm-all"}'
assert_status 201 "start storm-all on $N hosts"
EXE=$(jget id)
ended() { [ "$(sql "$D" "SELECT COUNT(*) FROM events WHERE type = 'execution.finished' AND subject = '$EXE'")" = 1 ]; }
wait_for 30 ended || fail "storm-all did not finish"
for t in started finished; do
  DATA=$(sql "$D" "SELECT data FROM events WHERE type = 'execution.$t' AND subject = '$EXE'")
  assert_eq "$(printf '%s' "$DATA" | jq -c '[.targets_total, (.targets | length), .targets_truncated]')" \
    "[$N,50,true]" "execution.$t: every target counted, 50 listed"
done
assert_eq "$(printf '%s' "$DATA" | jq -r '.status')" succeeded "storm-all succeeded"
assert_eq "$(printf '%s' "$DATA" | jq -r '.target_counts.succeeded')" "$N" "every target counted as succeeded"
finish
