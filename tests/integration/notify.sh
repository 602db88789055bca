#!/usr/bin/env bash
# Incidents and notifications against real peers (docs/incidents.md): a real
# alert rule opens an incident; Keel notifies a local webhook receiver
# (tests/tools/webhook_receiver.py) in its own format and in Alertmanager's
# webhook format (through a receiver that answers 500 twice: retries, one
# notification id), and posts the alerts to a real Alertmanager
# (prometheus-alertmanager), whose own webhook delivers them to the same
# receiver: Keel -> Alertmanager /api/v2/alerts -> Alertmanager's webhook,
# and Keel's alertmanager-webhook payload has the shape of the real one.
# The Alertmanager is told again each re-send delay, endsAt four delays
# ahead, so the alert stays active there as long as Keel fires it, also
# across restarts. A keeld restart (SIGTERM, then kill -9) while the
# incident is open sends no notification again; deleting
# the rule resolves the alert, the incident resolves by itself and every
# channel hears "resolved" exactly once.  Then: a 4xx fails at once;
# ack / comment / resolve (409 twice, 403 for a viewer); a maintenance
# window suppresses the notifications of a new incident (recorded, not sent).
# keeld's own /metrics counts every HTTP attempt (retries too) and each
# outcome (sent, failed, suppressed) once.
. "$(dirname "$0")/lib.sh" "$1"

AM_BIN=$(command -v prometheus-alertmanager || command -v alertmanager) ||
  fail "Alertmanager not installed (package prometheus-alertmanager)"
command -v python3 >/dev/null || fail "python3 not installed"
command -v jq >/dev/null || fail "jq not installed"
RECEIVER=$(cd "$(dirname "$0")/../tools" && pwd)/webhook_receiver.py
HOOKLOG=$TMP/hook.log

# ---- the receiver and Alertmanager --------------------------------------------------------
python3 "$RECEIVER" --port-file "$TMP/recv.port" --log "$HOOKLOG" --fail /flaky=2 2>"$TMP/recv.err" &
_PIDS+=("$!")
wait_for 10 test -s "$TMP/recv.port" || fail "webhook receiver did not start: $(cat "$TMP/recv.err")"
RPORT=$(cat "$TMP/recv.port")
cat >"$TMP/am.yml" <<EOF
route:
  receiver: keel-test
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: keel-test
    webhook_configs:
      - url: http://127.0.0.1:$RPORT/am-out
        send_resolved: true
EOF
start_listener alertmanager /-/ready "$AM_BIN" --config.file="$TMP/am.yml" \
  --storage.path="$TMP/am-data" --web.listen-address=127.0.0.1:@PORT --cluster.listen-address= \
  --log.level=warn
AMURL=http://127.0.0.1:$LPORT

# hooks PATH [JQ-FILTER] — the receiver's records for PATH, one JSON per line
hooks() { [ -s "$HOOKLOG" ] && jq -rc "select(.path == \"$1\")${2:+ | $2}" "$HOOKLOG"; }
nhooks() { hooks "$@" | wc -l | tr -d ' '; }
has_hooks() { [ "$(nhooks "$1" "${3:-}")" -ge "$2" ]; } # PATH N [FILTER]

# ---- keeld with a policy and a rule that always fires ------------------------------------------
init_data "$TMP/d"
start_keeld "$TMP/d" --heartbeat 1s --alertmanager-resend 1s
cat >"$TMP/policy.yaml" <<EOF
kind: NotificationPolicy
channels:
  - name: hook
    url: http://127.0.0.1:$RPORT/hook
    headers: {Authorization: Bearer receiver-secret}
  - name: amhook
    url: http://127.0.0.1:$RPORT/flaky
    format: alertmanager-webhook
  - name: am
    type: alertmanager
    url: $AMURL
  - name: refused
    url: http://127.0.0.1:$RPORT/status/400
routes:
  - match: "team=payments,severity=critical"
    steps:
      - after: 0s
        notify: [hook, amhook, am]
  - match: "team=refuse"
    steps:
      - notify: [refused]
EOF
req POST "/v1/apply?file=policy.yaml" "@$TMP/policy.yaml"
assert_status 200 "apply the policy"
assert_contains "$BODY" '"changed":true' "first apply"
req POST "/v1/apply?file=policy.yaml" "@$TMP/policy.yaml"
assert_contains "$BODY" '"changed":false' "the same policy again changes nothing"
printf 'kind: NotificationPolicy\nchannels: [{name: a, url: "http://x/"}]\nroutes: [{steps: [{notify: [b]}]}]\n' >"$TMP/bad.yaml"
req POST "/v1/apply?file=bad.yaml" "@$TMP/bad.yaml"
assert_error 400 bad_request "a route naming an unknown channel"
assert_contains "$BODY" "bad.yaml:3:" "error names the line"

cat >"$TMP/rule.yaml" <<'EOF'
kind: AlertRule
name: always
team: payments
expr: vector(1)
for: 0s
interval: 1s
severity: critical
annotations: {summary: "payments is on fire"}
EOF
T_APPLY=$(date +%s%3N)
req POST "/v1/apply?file=rule.yaml" "@$TMP/rule.yaml"
assert_status 200 "apply the rule"

open_incident() { req GET "/v1/incidents?state=open" && [ "$(jcount id)" -ge 1 ]; }
wait_for 10 open_incident || fail "no incident opened: $BODY"
check
INC=$(jget id)
assert_contains "$BODY" '"title":"payments is on fire"' "incident title"
assert_contains "$BODY" '"team":"payments"' "incident team"

# ---- firing: one notification per channel ------------------------------------------------------
wait_for 10 has_hooks /hook 1 || fail "the keel-format hook got nothing: $(cat "$HOOKLOG" 2>/dev/null)"
check
H=$(hooks /hook)
assert_eq "$(printf '%s' "$H" | jq -r .body.status)" firing "keel format: status"
assert_eq "$(printf '%s' "$H" | jq -r .body.incident.id)" "$INC" "keel format: incident"
assert_eq "$(printf '%s' "$H" | jq -r '.body.alerts[0].labels.alertname')" always "keel format: alert"
assert_eq "$(printf '%s' "$H" | jq -r .headers.authorization)" "Bearer receiver-secret" "channel header"
assert_eq "$(printf '%s' "$H" | jq -r .id)" "$(printf '%s' "$H" | jq -r .body.notification_id)" \
  "X-Keel-Notification-Id is the notification's id"
T_HOOK=$(date +%s%3N)
echo "first notification within $((T_HOOK - T_APPLY)) ms of the rule's apply (interval 1s)"

# the flaky receiver: 500, 500, then 200 — one notification, retried with the same id
wait_for 15 has_hooks /flaky 3 || fail "flaky receiver: $(hooks /flaky .status)"
check
assert_eq "$(hooks /flaky .status | tr '\n' ' ')" "500 500 200 " "flaky answers"
assert_eq "$(hooks /flaky .id | sort -u | wc -l | tr -d ' ')" 1 "one notification id over the retries"

# Keel -> Alertmanager -> its webhook -> the receiver
wait_for 15 has_hooks /am-out 1 || fail "Alertmanager delivered nothing: $(curl -s "$AMURL/api/v2/alerts") $(tail -5 "$TMP/alertmanager.log")"
check
AMO=$(hooks /am-out | head -n 1)
assert_eq "$(printf '%s' "$AMO" | jq -r .body.status)" firing "Alertmanager's webhook: status"
assert_eq "$(printf '%s' "$AMO" | jq -r '.body.alerts[0].labels.alertname')" always "Alertmanager's webhook: alertname"
assert_eq "$(printf '%s' "$AMO" | jq -r '.body.alerts[0].labels.team')" payments "Alertmanager's webhook: team"
assert_eq "$(printf '%s' "$AMO" | jq -r '.body.alerts[0].annotations.keel_incident')" "$INC" "Alertmanager's webhook: incident"
# the Alertmanager is told again each re-send delay (1 s here) with endsAt four
# delays ahead, as Prometheus does: a firing alert never ends there by itself
am_alert() { curl -s --max-time 5 "$AMURL/api/v2/alerts" | jq -c '[.[] | select(.labels.alertname == "always")][0]'; }
E1=$(am_alert | jq -r .endsAt)
sleep 2.5
A2=$(am_alert)
E2=$(printf '%s' "$A2" | jq -r .endsAt)
[ "$(date -d "$E2" +%s%3N)" -gt "$(date -d "$E1" +%s%3N)" ] || fail "endsAt in the Alertmanager did not move: $E1, then $E2"
check
LEFT=$(($(date -d "$E2" +%s%3N) - $(date +%s%3N)))
[ "$LEFT" -gt 0 ] && [ "$LEFT" -le 4500 ] || fail "endsAt $LEFT ms ahead, want (0, 4 s] (4 re-send delays)"
check
assert_eq "$(printf '%s' "$A2" | jq -r .status.state)" active "the alert is active in the Alertmanager"
wait_for 5 metric_ge keel_alertmanager_resends_total 2 || fail "re-sends on /metrics: $(metric keel_alertmanager_resends_total)"
check
assert_eq "$(metric keel_alertmanager_resend_failures_total)" 0 "no failed re-send"
# Keel's alertmanager-webhook payload has the real one's shape, key for key
FL=$(hooks /flaky | tail -n 1)
assert_eq "$(printf '%s' "$FL" | jq -c '.body | keys')" "$(printf '%s' "$AMO" | jq -c '.body | keys')" "webhook payload keys"
assert_eq "$(printf '%s' "$FL" | jq -c '.body.alerts[0] | keys')" "$(printf '%s' "$AMO" | jq -c '.body.alerts[0] | keys')" "webhook alert keys"
assert_eq "$(printf '%s' "$FL" | jq -r .body.version)" "$(printf '%s' "$AMO" | jq -r .body.version)" "webhook version"
assert_eq "$(printf '%s' "$FL" | jq -r '.body.alerts[0].endsAt')" "$(printf '%s' "$AMO" | jq -r '.body.alerts[0].endsAt')" "a firing alert's endsAt"
assert_eq "$(printf '%s' "$FL" | jq -r '.body.commonLabels.alertname')" always "commonLabels"

req GET "/v1/incidents/$INC"
assert_status 200
assert_eq "$(printf '%s' "$BODY" | jq '[.notifications[] | select(.status == "sent")] | length')" 3 "3 notifications sent"
assert_contains "$BODY" '"kind":"notification.sent"' "timeline"
req GET "/v1/events?type=notification.sent&subject=$INC"
assert_eq "$(jcount specversion)" 3 "notification.sent events"
# /metrics: 3 sent, and every attempt the rows count (flaky's 500, 500, 200 among them)
wait_for 5 metric_is 'keel_notifications_total{result="sent"}' 3 ||
  fail "notifications sent on /metrics: $(metric 'keel_notifications_total{result="sent"}'), want 3"
check
req GET "/v1/incidents/$INC"
ATTEMPTS=$(printf '%s' "$BODY" | jq '[.notifications[].attempts] | add')
[ "$ATTEMPTS" -ge 5 ] || fail "the notifications' attempts: $ATTEMPTS, want >= 5"
assert_eq "$(metric keel_notification_attempts_total)" "$ATTEMPTS" "notification attempts on /metrics, retries included"
assert_eq "$(metric 'keel_notifications_total{result="failed"}')" 0 "no failed notification on /metrics"
assert_eq "$(metric keel_notification_outbox)" 0 "nothing left in the outbox"
assert_eq "$(metric 'keel_incidents{state="open"}')" 1 "one open incident on /metrics"
assert_eq "$(metric 'keel_alerts{state="firing"}')" 1 "one firing alert on /metrics"
check_metrics

# ---- a restart while the incident is open: nothing is sent again ------------------------------------
N_HOOK=$(nhooks /hook)
N_ALL=$(wc -l <"$HOOKLOG")
stop_keeld TERM
assert_eq "$KEELD_RC" 0 "keeld exit"
start_keeld "$TMP/d" --heartbeat 1s --alertmanager-resend 1s
sleep 4
assert_eq "$(nhooks /hook)" "$N_HOOK" "no second notification after a restart"
assert_eq "$(wc -l <"$HOOKLOG" | tr -d ' ')" "$N_ALL" "no request at all after a restart"
req GET "/v1/incidents/$INC"
assert_eq "$(jget state)" open "still open after the restart"
assert_eq "$(printf '%s' "$BODY" | jq '.notifications | length')" 3 "no new notification rows"
# ... and after kill -9
stop_keeld KILL
start_keeld "$TMP/d" --heartbeat 1s --alertmanager-resend 1s
sleep 3
assert_eq "$(wc -l <"$HOOKLOG" | tr -d ' ')" "$N_ALL" "no request at all after kill -9 and a restart"
# more than four re-send delays went by across the restarts: still firing there
assert_eq "$(am_alert | jq -r .status.state)" active "the alert is still active in the Alertmanager after the restarts"
LEFT=$(($(date -d "$(am_alert | jq -r .endsAt)" +%s%3N) - $(date +%s%3N)))
[ "$LEFT" -gt 0 ] || fail "the Alertmanager's endsAt is $LEFT ms ago after the restarts"
check

# ---- resolve by itself: delete the rule --------------------------------------------------------------
req DELETE /v1/alert-rules/always
assert_status 200 "delete the rule"
resolved() { req GET "/v1/incidents/$INC" && [ "$(jget state)" = resolved ]; }
wait_for 10 resolved || fail "incident not resolved: $BODY"
check
assert_eq "$(jget resolved_by)" keeld "resolved by keeld"
wait_for 10 has_hooks /hook 2 || fail "no resolved notification: $(hooks /hook .body.status)"
wait_for 20 has_hooks /am-out 1 'select(.body.status == "resolved")' ||
  fail "Alertmanager sent no resolved: $(hooks /am-out .body.status) $(curl -s "$AMURL/api/v2/alerts")"
wait_for 10 has_hooks /flaky 4 || fail "no resolved on the alertmanager-webhook channel"
sleep 1
assert_eq "$(hooks /hook .body.status | tr '\n' ' ')" "firing resolved " "exactly one firing and one resolved"
assert_eq "$(hooks /flaky '.body.status' | tr '\n' ' ')" "firing firing firing resolved " "flaky: retries, then one resolved"
assert_eq "$(hooks /flaky '.body.alerts[0].status' | tail -n 1)" resolved "resolved alert status"

# ---- a receiver that refuses the request: failed at once ------------------------------------------------
cat >"$TMP/refuse.yaml" <<'EOF'
kind: AlertRule
name: refuse
team: refuse
expr: vector(1)
interval: 1s
severity: warning
EOF
req POST "/v1/apply?file=refuse.yaml" "@$TMP/refuse.yaml"
assert_status 200
failed() { req GET "/v1/events?type=notification.failed" && [ "$(jcount specversion)" -ge 1 ]; }
wait_for 10 failed || fail "no notification.failed"
check
assert_contains "$BODY" 'HTTP 400' "failed with the receiver's status"
assert_eq "$(nhooks /status/400)" 1 "a 400 is not retried"
RINC=$(jget subject)
wait_for 5 metric_is 'keel_notifications_total{result="failed"}' 1 ||
  fail "failed notifications on /metrics: $(metric 'keel_notifications_total{result="failed"}'), want 1"
check

# ---- ack, comment, resolve; a viewer only reads ----------------------------------------------------------
kc incident list --state open
assert_eq "$KRC" 0 "incident list: $KERR"
assert_contains "$KOUT" "$RINC" "incident list"
kc incident comment "$RINC" "looking into it"
assert_eq "$KRC" 0 "comment: $KERR"
kc incident ack "$RINC"
assert_eq "$KRC" 0 "ack: $KERR"
assert_contains "$KOUT" "acked $RINC: acked"
assert_eq "$(metric 'keel_incidents{state="acked"}')" 1 "the acked incident on /metrics"
assert_eq "$(metric 'keel_incidents{state="open"}')" 0 "no open incident left on /metrics"
req POST "/v1/incidents/$RINC/ack" ""
assert_error 409 conflict "ack twice"
make_user vera viewer
req GET /v1/incidents "" "$UTOKEN"
assert_status 200 "a viewer lists incidents"
assert_contains "$BODY" "$RINC"
req POST "/v1/incidents/$RINC/resolve" "" "$UTOKEN"
assert_error 403 forbidden "a viewer resolves"
req POST "/v1/incidents/$RINC/comment" '{"text":""}'
assert_error 400 bad_request "an empty comment"
req POST "/v1/incidents/$RINC/comment" '{"txt":"x"}'
assert_error 400 bad_request "an unknown field"
kc incident resolve "$RINC" --text "fixed by hand"
assert_eq "$KRC" 0 "resolve: $KERR"
kc incident resolve "$RINC"
assert_eq "$KRC" 1 "resolve twice"
assert_contains "$KERR" "409"
req GET /v1/incidents/inc_nope
assert_error 404 not_found "unknown incident"
kc incident show "$RINC"
assert_eq "$KRC" 0
assert_contains "$KOUT" "comment" "show: timeline"
assert_contains "$KOUT" "user:admin  looking into it" "show: comment"
assert_contains "$KOUT" "fixed by hand" "show: resolve note"
req GET "/v1/audit?action=incident:write"
assert_eq "$(jcount seq)" 7 "ack/resolve/comment audited: 3 ok, 3 failed (2 x 409, the empty comment), 1 denied (403); the unknown field never got past decoding"

# ---- a maintenance window: the incident opens, nothing is sent --------------------------------------------
cat >"$TMP/window.yaml" <<'EOF'
kind: MaintenanceWindow
name: payments-upgrade
team: payments
selector: team=payments
cron: "* * * * *"
duration: 1h
reason: database upgrade
EOF
req POST "/v1/apply?file=window.yaml" "@$TMP/window.yaml"
assert_status 200 "apply the window"
kc maintenance list
assert_eq "$KRC" 0 "maintenance list: $KERR"
assert_match "$KOUT" "payments-upgrade +payments +until " "window active"
N_ALL=$(wc -l <"$HOOKLOG")
sed 's/^name: always/name: always-again/' "$TMP/rule.yaml" >"$TMP/rule2.yaml"
req POST "/v1/apply?file=rule2.yaml" "@$TMP/rule2.yaml"
assert_status 200
suppressed() { req GET "/v1/events?type=notification.suppressed" && [ "$(jcount specversion)" -ge 3 ]; }
wait_for 10 suppressed || fail "notifications not suppressed: $BODY"
check
assert_contains "$BODY" "maintenance window payments-upgrade" "suppressed names the window"
sleep 2
assert_eq "$(wc -l <"$HOOKLOG" | tr -d ' ')" "$N_ALL" "nothing sent under the window"
assert_eq "$(metric 'keel_notifications_total{result="suppressed"}')" \
  "$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/events?type=notification.suppressed" | jcount specversion)" \
  "suppressed notifications on /metrics, as their events"
req GET "/v1/incidents?state=open"
assert_contains "$BODY" "always-again" "the incident opened all the same"

stop_keeld TERM
assert_eq "$KEELD_RC" 0 "keeld exit"
finish
