#!/usr/bin/env bash
# automation.sh — the end-to-end test of issue 7 (detect, notify, repair by
# itself) with a real keeld, a real keel-agent (--interval 1s
# --watch-process) and a real service (a renamed copy of sleep):
#   0. examples/automation/*.yaml apply cleanly (on the example
#      organization), a second time change nothing; bad rules get a 400
#      naming file:line:column and change nothing;
#   A. the service is killed: within 2 s the restart runbook (started by an
#      automation rule, as the rule's owner, audited with the event) has
#      run and the service is back; the incident opened and auto-resolved;
#      the webhook receiver got exactly one firing and one resolved
#      notification;
#   B. the same inside a maintenance window: no notification, no
#      automation (recorded as skipped: maintenance), the events recorded;
#   C. with the kill switch off (recorded as skipped: kill_switch), keeld
#      restarted while the alert fires: no second notification for it;
#   D. a rule with require_approval: its execution waits for the owning
#      team (the rule's owner may not approve), then runs.
# All along, keeld's own /metrics (valid for promtool) counts what happened:
# the run, the notifications, alerts and incidents back to 0, the skips, the
# kill switch, an event stream, the execution waiting for its approval.
. "$(dirname "$0")/lib.sh" "${1:-}"
SRC=$(cd "$(dirname "$0")/../.." && pwd)
now_ms() { date +%s%3N; }
rfc3339() { date -u -d "$1" +%Y-%m-%dT%H:%M:%SZ; }

# ---- 0. the examples, on the example organization --------------------------------------
D0=$TMP/examples
init_data "$D0"
start_keeld "$D0"
kc apply -f "$SRC/examples/org.yaml"
assert_eq "$KRC" 0 "apply examples/org.yaml: $KERR"
for f in "$SRC"/examples/automation/*.yaml; do
  kc apply -f "$f"
  assert_eq "$KRC" 0 "apply $(basename "$f"): $KERR"
  assert_contains "$KOUT" "1 created" "apply $(basename "$f")"
done
for f in "$SRC"/examples/automation/*.yaml; do
  kc apply -f "$f"
  assert_eq "$KRC" 0 "apply $(basename "$f") again: $KERR"
  assert_contains "$KOUT" "no changes" "apply $(basename "$f") again"
done
kc automation rules
assert_contains "$KOUT" "restart-checkout-service" "keel automation rules"
assert_contains "$KOUT" "clean-full-disk" "keel automation rules"
# bad rules: a clear 400, nothing stored
printf 'kind: AutomationRule\nname: bad\napplication: checkout\non: {type: service.down}\nrun: {runbook: restart-on-host, params: {host: "{{ labels.instance }}", service: x}}\nfoo: 1\n' >"$TMP/bad1.yaml"
kc apply -f "$TMP/bad1.yaml"
assert_eq "$KRC" 1 "an unknown field is refused"
assert_contains "$KERR" "bad1.yaml:6:6: foo: unknown field" "the error names file:line:column"
printf 'kind: AutomationRule\nname: bad\napplication: checkout\non: {type: service.down}\nrun: {runbook: restart-on-host, params: {host: "{{ labels.instance }}"}}\n' >"$TMP/bad2.yaml"
kc apply -f "$TMP/bad2.yaml"
assert_eq "$KRC" 1 "a required runbook parameter missing is refused"
assert_contains "$KERR" "requires parameter 'service'" "the error names the parameter"
printf 'kind: AutomationRule\nname: bad\napplication: nope\non: {type: service.down}\nrun: {runbook: restart-on-host}\n' >"$TMP/bad3.yaml"
kc apply -f "$TMP/bad3.yaml"
assert_eq "$KRC" 1 "an owner outside the organization is refused"
assert_contains "$KERR" "no application 'nope'" "the error names the owner"
req GET /v1/automation/rules/bad
assert_status 404 "no bad rule was stored"
# judged automation:write on the rule's path: someone in no team may not
make_user vic viewer
"$KEEL" --server "$URL" --token "$UTOKEN" apply -f "$SRC/examples/automation/07-disk-full.automation.yaml" \
  >"$TMP/vic.out" 2>"$TMP/vic.err" && fail "a user without automation:write applied a rule"
assert_contains "$(cat "$TMP/vic.err")" "may not automation:write on team/platform/automation/clean-full-disk" "the 403 names the action and path"
stop_keeld

# ---- the platform under test -------------------------------------------------------------
D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s
python3 "$SRC/tests/tools/webhook_receiver.py" --port-file "$TMP/rx.port" --log "$TMP/rx.log" &
_PIDS+=("$!")
wait_for 10 test -s "$TMP/rx.port" || fail "the webhook receiver did not start"
RX=http://127.0.0.1:$(cat "$TMP/rx.port")/hook
touch "$TMP/rx.log"
# notifications STATUS — how many the receiver got with that status
notifications() { jq -s "[.[] | select(.body.status == \"$1\")] | length" "$TMP/rx.log"; }
n_is() { [ "$(notifications "$1")" = "$2" ]; }

# The service: a copy of sleep under a name of its own, detached.
SVC=ks$$
mkdir -p "$TMP/svc"
cp /bin/sleep "$TMP/svc/$SVC"
start_svc() { setsid "$TMP/svc/$SVC" 100000 </dev/null >/dev/null 2>&1 & }
svc_pid() { pgrep -x "$SVC" | head -n 1; }
svc_up() { [ -n "$(svc_pid)" ]; }
svc_down() { [ -z "$(svc_pid)" ]; }
trap 'pkill -x "$SVC" 2>/dev/null; _cleanup' EXIT
start_svc
wait_for 5 svc_up || fail "the service did not start"

cat >"$TMP/org.yaml" <<EOF
kind: Organization
name: test
operating_model: decentralized
users: [{name: bob}]
teams: [{name: shopteam, kind: application, members: [bob]}]
applications: [{name: shop, owner: shopteam, environments: [prod], selector: app=shop}]
EOF
cat >"$TMP/notify.yaml" <<EOF
kind: NotificationPolicy
team: shopteam
channels: [{name: hook, type: webhook, url: "$RX"}]
routes: [{steps: [{after: 0s, notify: [hook]}]}]
EOF
cat >"$TMP/alert.yaml" <<EOF
kind: AlertRule
name: svc-down
application: shop
event: {type: service.down, clear: service.up, match: "service=$SVC", by: [instance, service]}
severity: critical
interval: 1s
EOF
cat >"$TMP/runbook.yaml" <<EOF
kind: Runbook
name: restart-svc
owner: {application: shop}
parameters:
  - {name: host, type: string, required: true}
  - {name: service, type: string, required: true, pattern: "^[a-z0-9]+\$"}
targets: "hostname={{ params.host }}"
steps:
  - name: restart
    command: {shell: "setsid $TMP/svc/{{ params.service }} 100000 </dev/null >/dev/null 2>&1 &"}
  - name: verify
    command: {shell: "for i in 1 2 3 4 5 6 7 8 9 10; do pgrep -x {{ params.service }} && exit 0; sleep 0.1; done; exit 1"}
EOF
cat >"$TMP/rule.yaml" <<EOF
kind: AutomationRule
name: restart-svc
application: shop
on:
  type: service.down
  match: "service=$SVC"
run:
  runbook: restart-svc
  params: {host: "{{ labels.instance }}", service: "{{ labels.service }}"}
cooldown: 3s
max_runs_per_hour: 10
EOF
for f in org notify alert runbook rule; do
  kc apply -f "$TMP/$f.yaml"
  assert_eq "$KRC" 0 "apply $f: $KERR"
done
kc apply -f "$TMP/rule.yaml"
assert_contains "$KOUT" "no changes" "the rule applied twice changes nothing"

kc agent token create --tags app=shop
assert_eq "$KRC" 0 "agent token create: $KERR"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)
start_agent h1 --enroll-token "$ET" --interval 1s --watch-process "$SVC"
wait_enrolled h1
# the agent has looked at the service once (its state is up, nothing reported down)
sleep 1.5

# runs_where JQ-FILTER — automation runs matching it
runs_where() {
  curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/automation/runs?limit=1000" |
    jq "[.items[] | select($1)] | length"
}
runs_are() { [ "$(runs_where "$1")" = "$2" ]; }
incidents() { curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/incidents?state=$1" | jq '.items | length'; }
incidents_are() { [ "$(incidents "$1")" = "$2" ]; }

# ---- A. killed -> restarted within 2 s, one incident, one firing + one resolved ----------
OLD=$(svc_pid)
T0=$(now_ms)
kill "$OLD"
back() { local p; p=$(svc_pid); [ -n "$p" ] && [ "$p" != "$OLD" ] && ! kill -0 "$OLD" 2>/dev/null; }
wait_for 5 back || fail "the service was not restarted within 5 s"
T1=$(now_ms)
echo "automation: service killed -> back in $((T1 - T0)) ms (1 s agent interval included)"
[ $((T1 - T0)) -le 2000 ] || fail "the service came back after $((T1 - T0)) ms, more than 2 s"
check
wait_for 10 runs_are '.outcome == "triggered" and .execution_state == "succeeded"' 1 ||
  fail "no triggered run with a succeeded execution: $(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/automation/runs")"
req GET "/v1/automation/runs?rule=restart-svc"
EXE=$(printf '%s' "$BODY" | jq -r '.items[0].execution_id')
EVT=$(printf '%s' "$BODY" | jq -r '.items[0].event.id')
assert_eq "$(printf '%s' "$BODY" | jq -r '.items[0].event.type')" service.down "the run names its event"
req GET "/v1/executions/$EXE"
assert_eq "$(jget cause)" "automation/restart-svc" "the execution's cause"
assert_eq "$(jget requested_by)" admin "the execution runs as the rule's owner"
req GET "/v1/audit?action=runbook:start&limit=1000"
AUD=$(printf '%s' "$BODY" | jq -c "[.items[] | select(.detail | contains(\"$EXE\"))][0]")
assert_eq "$(jget actor "$AUD")" "user:admin (automation restart-svc)" "audited as the owner, by the rule"
assert_contains "$AUD" "$EVT" "the audit record names the event"
assert_contains "$AUD" "(service.down" "and its type"
wait_for 10 incidents_are resolved 1 || fail "the incident did not auto-resolve: $(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/incidents")"
wait_for 10 n_is resolved 1 || fail "no resolved notification: $(cat "$TMP/rx.log")"
sleep 1.5
assert_eq "$(notifications firing)" 1 "exactly one firing notification"
assert_eq "$(notifications resolved)" 1 "exactly one resolved notification"
req GET "/v1/events?type=automation.triggered"
assert_eq "$(printf '%s' "$BODY" | jq '.items | length')" 1 "one automation.triggered event"

# keeld's own /metrics: every engine's families, and what A did to them
curl -s -N --max-time 60 -H "Authorization: Bearer $TOKEN" "$URL/v1/events/stream" >"$TMP/sse.out" 2>&1 &
SSE=$!
_PIDS+=("$SSE")
wait_for 5 metric_is keel_event_streams 1 || fail "keel_event_streams: $(metric keel_event_streams), want 1"
check
check_metrics
M=$(cat "$TMP/metrics.txt")
for f in keel_events_emitted_total:counter keel_events_last_seq:gauge keel_event_streams:gauge \
  keel_event_streams_cut_total:counter keel_alert_rules:gauge keel_alerts:gauge \
  keel_alert_evaluations_total:counter keel_alert_evaluation_failures_total:counter \
  keel_alert_evaluation_duration_seconds:histogram keel_incidents:gauge \
  keel_notifications_total:counter keel_notification_attempts_total:counter \
  keel_notification_outbox:gauge keel_automation_triggered_total:counter \
  keel_automation_queue:gauge keel_automation_enabled:gauge keel_agents:gauge keel_executions:gauge; do
  assert_match "$M" "^# TYPE ${f%%:*} ${f##*:}\$" "/metrics: # TYPE of ${f%%:*}"
  assert_match "$M" "^# HELP ${f%%:*} [^ ]" "/metrics: # HELP of ${f%%:*}"
done
wait_for 5 metric_ge 'keel_notifications_total{result="sent"}' 2 ||
  fail "notifications sent: $(metric 'keel_notifications_total{result="sent"}'), want >= 2 (firing, resolved)"
check
assert_eq "$(metric 'keel_automation_triggered_total{result="run"}')" 1 "automation runs on /metrics"
assert_eq "$(metric 'keel_automation_triggered_total{result="skipped"}')" 0 "automation skips on /metrics"
assert_eq "$(metric 'keel_automation_triggered_total{result="dry_run"}')" 0 "automation dry runs on /metrics"
assert_eq "$(metric 'keel_alerts{state="firing"}')" 0 "firing alerts on /metrics, after the resolve"
assert_eq "$(metric 'keel_alerts{state="pending"}')" 0 "pending alerts on /metrics"
assert_eq "$(metric 'keel_incidents{state="open"}')" 0 "open incidents on /metrics"
assert_eq "$(metric keel_notification_outbox)" 0 "notification outbox on /metrics"
metric_ge keel_notification_attempts_total 2 ||
  fail "notification attempts: $(metric keel_notification_attempts_total)"
check
assert_eq "$(metric keel_alert_rules)" 1 "alert rules on /metrics"
metric_ge keel_alert_evaluations_total 1 || fail "alert evaluations: $(metric keel_alert_evaluations_total)"
check
metric_ge keel_alert_evaluation_duration_seconds_count 1 || fail "no evaluation observed by the histogram"
check
assert_eq "$(metric 'keel_agents{state="online"}')" 1 "online agents on /metrics"
assert_eq "$(metric 'keel_agents{state="offline"}')" 0 "offline agents on /metrics"
assert_eq "$(metric keel_automation_enabled)" 1 "the kill switch on /metrics"
assert_eq "$(metric 'keel_executions{state="running"}')" 0 "running executions on /metrics: the restart is over"
metric_ge keel_events_emitted_total 10 || fail "events emitted: $(metric keel_events_emitted_total)"
check
metric_ge keel_events_last_seq "$(metric keel_events_emitted_total)" || fail "last seq below the events emitted"
check
assert_contains "$(cat "$TMP/sse.out")" ": keel events" "the stream answered"
# a parked stream learns its client left at its next event (B has some)
kill "$SSE" 2>/dev/null
wait "$SSE" 2>/dev/null

# ---- B. inside a maintenance window: detection goes on, nothing else -------------------
cat >"$TMP/window.yaml" <<EOF
kind: MaintenanceWindow
name: svc-work
team: shopteam
selector: "service=$SVC"
reason: planned work on the service
start: $(rfc3339 '-1 min')
end: $(rfc3339 '+1 hour')
EOF
kc apply -f "$TMP/window.yaml"
assert_eq "$KRC" 0 "apply the maintenance window: $KERR"
sleep 0.5 # windows are reloaded before the next loop turn
DOWN_BEFORE=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/events?type=service.down" | jq '.items | length')
kill "$(svc_pid)"
wait_for 5 runs_are '.guard == "maintenance"' 1 || fail "the rule did not record a maintenance skip"
req GET "/v1/automation/runs?rule=restart-svc&limit=1"
assert_contains "$(jget reason)" "maintenance window 'svc-work' is active" "the skip names the window"
sleep 2.5
svc_down || fail "automation restarted the service inside a maintenance window"
check
req GET "/v1/events?type=service.down"
assert_eq "$(printf '%s' "$BODY" | jq '.items | length')" $((DOWN_BEFORE + 1)) "the service.down event is recorded"
req GET "/v1/events?type=automation.skipped"
assert_contains "$BODY" '"guard":"maintenance"' "automation.skipped says why"
wait_for 10 incidents_are open 1 || fail "detection must go on: no open incident"
assert_eq "$(notifications firing)" 1 "no notification inside the window"
start_svc
wait_for 10 incidents_are resolved 2 || fail "the second incident did not resolve"
sleep 1
assert_eq "$(notifications firing)" 1 "still one firing notification"
assert_eq "$(notifications resolved)" 1 "still one resolved notification"
assert_eq "$(runs_where '.outcome == "triggered"')" 1 "still one triggered run"
# the window ends (applied again, in the past)
sed -i "s/^start: .*/start: $(rfc3339 '-10 min')/; s/^end: .*/end: $(rfc3339 '-5 min')/" "$TMP/window.yaml"
kc apply -f "$TMP/window.yaml"
assert_eq "$KRC" 0 "end the maintenance window: $KERR"

# ---- C. kill switch off; keeld restarted while the alert fires -------------------------
kc automation disable --reason "keeld restart test"
assert_eq "$KRC" 0 "keel automation disable: $KERR"
req GET /v1/automation/switch
assert_eq "$(jget enabled)" false "the switch is off"
req GET "/v1/audit?action=automation:admin"
assert_contains "$BODY" "keeld restart test" "switching off is audited with its reason"
sleep 0.5
kill "$(svc_pid)"
wait_for 5 runs_are '.guard == "kill_switch"' 1 || fail "the rule did not record a kill_switch skip"
wait_for 10 n_is firing 2 || fail "no firing notification for the new incident: $(cat "$TMP/rx.log")"
svc_down || fail "automation restarted the service with the kill switch off"
check
assert_eq "$(metric keel_automation_enabled)" 0 "the kill switch off on /metrics"
assert_eq "$(metric 'keel_automation_triggered_total{result="skipped"}')" \
  "$(runs_where '.outcome == "skipped" or .outcome == "denied" or .outcome == "failed"')" \
  "skips on /metrics (maintenance, kill switch) as the runs record them"
assert_eq "$(metric 'keel_automation_triggered_total{result="run"}')" 1 "still one run on /metrics"
wait_for 5 metric_is keel_event_streams 0 || fail "the stream its client closed: $(metric keel_event_streams) open"
check
assert_eq "$(metric keel_event_streams_cut_total)" 0 "a stream its client closed is not one keeld cut"
metric_ge 'keel_notifications_total{result="suppressed"}' 1 ||
  fail "suppressed notifications (B): $(metric 'keel_notifications_total{result="suppressed"}')"
check
assert_eq "$(metric 'keel_alerts{state="firing"}')" 1 "the alert fires again on /metrics"
assert_eq "$(metric 'keel_incidents{state="open"}')" 1 "an open incident on /metrics"
PORT=${URL##*:}
stop_keeld
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s
wait_for 10 agent_is "$(agent_id h1)" online || fail "the agent did not come back"
req GET /v1/automation/switch
assert_eq "$(jget enabled)" false "the kill switch survives a restart"
sleep 3
assert_eq "$(notifications firing)" 2 "no second notification after the restart"
kc automation enable
assert_eq "$KRC" 0 "keel automation enable: $KERR"
start_svc
wait_for 10 n_is resolved 2 || fail "no resolved notification after the restart: $(cat "$TMP/rx.log")"
sleep 1.5
assert_eq "$(notifications firing)" 2 "two firing notifications in all"
assert_eq "$(notifications resolved)" 2 "two resolved notifications in all"
assert_eq "$(runs_where '.outcome == "triggered"')" 1 "one automated restart in all"
kc automation runs --rule restart-svc
assert_eq "$KRC" 0 "keel automation runs: $KERR"
assert_contains "$KOUT" "kill_switch" "keel automation runs shows the skips"

# ---- D. require_approval: the start waits for the owning team -----------------------------
req POST /v1/tokens '{"name":"bob","user":"bob"}'
assert_status 201 "a token for bob (of shopteam, the application's owner team)"
BOB=$(jget token)
cat >"$TMP/gated.yaml" <<EOF
kind: AutomationRule
name: gated
application: shop
on: {type: service.down, match: service=gated}
run:
  runbook: restart-svc
  params: {host: "{{ labels.instance }}", service: "{{ labels.service }}"}
require_approval: true
EOF
kc apply -f "$TMP/gated.yaml"
assert_eq "$KRC" 0 "apply the gated rule: $KERR"
AID=$(agent_id h1)
EVB='{"events":[{"type":"service.down","subject":"gated","data":{"service":"gated","labels":{"service":"gated"}}}]}'
areq POST /v1/agent/events "$EVB" "$(agent_auth h1 "$AID" POST /v1/agent/events "$EVB")"
assert_status 200 "an agent event, signed as h1"
wait_for 5 runs_are '.rule == "gated" and .outcome == "triggered"' 1 || fail "the gated rule did not trigger"
req GET "/v1/automation/runs?rule=gated"
GX=$(printf '%s' "$BODY" | jq -r '.items[0].execution_id')
req GET "/v1/executions/$GX"
assert_eq "$(jget state)" waiting_approval "the execution waits for an approval"
assert_eq "$(metric 'keel_executions{state="waiting_approval"}')" 1 "an execution waiting for its approval on /metrics"
assert_eq "$(printf '%s' "$BODY" | jq -c '.approval.approvers')" '["team:shopteam"]' "approvers: the owner team"
assert_contains "$(printf '%s' "$BODY" | jq -r '.approval.message')" "automation rule gated: service.down" "the message names rule and event"
assert_eq "$(printf '%s' "$BODY" | jq '[.targets[].steps[] | select(.name == "restart")] | length')" 0 "nothing ran before the approval"
req POST "/v1/executions/$GX/approve" '{}'
assert_status 403 "the rule's owner requested it and may not approve it"
req POST "/v1/executions/$GX/approve" '{"comment":"go"}' "$BOB"
assert_status 200 "a member of the owner team approves"
gx_final() { case "$(jget state "$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/executions/$GX")")" in succeeded | failed) return 0 ;; esac; return 1; }
wait_for 10 gx_final || fail "the approved execution did not run to its end"
assert_eq "$(metric 'keel_executions{state="waiting_approval"}')" 0 "no execution waiting on /metrics any more"
req GET "/v1/executions/$GX"
assert_eq "$(printf '%s' "$BODY" | jq '[.targets[].steps[] | select(.name == "restart")] | length')" 1 "the restart ran once, after the approval"
finish
