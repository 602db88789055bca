#!/usr/bin/env bash
# alerts.sh — alert rules end to end with a real keeld and a real keel-agent
# collecting every second (docs/alerts.md): an expr rule that always holds
# (node_load1 >= 0, for 2s, evaluated every 1s) goes pending and then firing
# at the right time; restarts of keeld (SIGTERM, then kill -9) keep it
# firing with the same active_since and emit no second alert.firing; an
# event rule on agent.offline (for 1s, cleared by agent.online) fires after
# the agent is killed and resolves when it is back; bad documents get a 400
# naming file:line:column and change nothing; the same document twice
# changes nothing; viewers read but do not write; deleting a rule resolves
# its alerts; the CLI lists alerts and rules.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s

ms_of() { date -d "$1" +%s%3N; }
# alerts_of QUERY — GET /v1/alerts?QUERY (200 required)
alerts_of() {
  req GET "/v1/alerts?$1"
  assert_status 200 "GET /v1/alerts?$1"
}
has_alert() { # QUERY NEEDLE — for wait_for
  local b
  b=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/alerts?$1") || return 1
  case "$b" in *"$2"*) return 0 ;; esac
  return 1
}
n_events() { # QUERY — how many events match
  local b
  b=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/events?$1&limit=1000")
  jcount type "$b"
}
apply() { # FILE [QUERY] — POST /v1/apply?file=NAME
  req POST "/v1/apply?file=$(basename "$1")${2:-}" "@$1"
}
has_series() {
  local b
  b=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/api/v1/query?query=node_load1") || return 1
  case "$b" in *'"result":[{'*) return 0 ;; esac
  return 1
}

# ---- an agent collecting every second --------------------------------------------------------
kc agent token create --uses 3
assert_eq "$KRC" 0 "agent token create: $KERR"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)
start_agent a --enroll-token "$ET" --interval 1s --tags app=checkout,env=prod
wait_enrolled a
A=$AID
wait_for 15 has_series || fail "no node_load1 from the agent"
check

# ---- bad documents change nothing --------------------------------------------------------------
cat >"$TMP/bad.yaml" <<'EOF'
kind: AlertRule
name: broken
team: ops
severity: warning
expr: rate(node_load1[1m]
EOF
apply "$TMP/bad.yaml"
assert_error 400 bad_request "bad expr"
assert_contains "$BODY" 'bad.yaml:5:7: expr: 1:20: parse error: unclosed left parenthesis' "bad expr"
cat >"$TMP/bad2.yaml" <<'EOF'
kind: AlertRule
name: broken
team: ops
severity: warning
event: {type: agent.offline, by: [agent_id, agent_id]}
annotations: {summary: "{{ $labels.a.b }}"}
EOF
apply "$TMP/bad2.yaml"
assert_error 400 bad_request "bad by"
assert_contains "$BODY" "bad2.yaml:5:45: event.by[1]: 'agent_id' listed twice" "bad by"
req GET /v1/alert-rules
assert_status 200
assert_eq "$(jcount name)" 0 "rules after bad documents"

# ---- an expr rule: pending, then firing after `for` ----------------------------------------
cat >"$TMP/load.yaml" <<'EOF'
kind: AlertRule
name: load-seen
team: ops
expr: node_load1 >= 0
for: 2s
interval: 1s
severity: warning
labels: {page: "no"}
annotations:
  summary: "{{ $labels.instance }} load is {{ $value }}"
EOF
apply "$TMP/load.yaml" "&dry_run=true"
assert_status 200 "dry run"
assert_contains "$BODY" '"summary":"dry run: 1 created, 0 updated, 0 deleted"'
req GET /v1/alert-rules
assert_eq "$(jcount name)" 0 "rules after a dry run"
T_APPLY=$(date +%s%3N)
apply "$TMP/load.yaml"
assert_status 200 "apply"
assert_contains "$BODY" '"summary":"1 created, 0 updated, 0 deleted"'
apply "$TMP/load.yaml"
assert_status 200 "apply again"
assert_contains "$BODY" '"changed":false' "the same document twice"

wait_for 5 has_alert "rule=load-seen" '"state":"pending"' || fail "no pending alert: $BODY"
check
alerts_of "rule=load-seen"
ACTIVE=$(jget active_since)
FP=$(jget fingerprint)
assert_match "$FP" '^[0-9a-f]{16}$' "fingerprint"
assert_contains "$BODY" "\"agent_id\":\"$A\"" "alert labels"
assert_contains "$BODY" '"alertname":"load-seen"' "alert labels"
assert_contains "$BODY" '"severity":"warning"' "alert labels"
assert_match "$BODY" '"summary":"[^"]+ load is [0-9.e+-]+"' "annotation"
A_MS=$(ms_of "$ACTIVE")
[ $((A_MS - T_APPLY)) -lt 1500 ] || fail "pending $((A_MS - T_APPLY)) ms after the apply"
check
wait_for 6 has_alert "rule=load-seen" '"state":"firing"' || fail "not firing: $BODY"
check
alerts_of "rule=load-seen"
FIRED=$(jget fired_at)
assert_eq "$(jget active_since)" "$ACTIVE" "active_since while firing"
F_MS=$(ms_of "$FIRED")
D_MS=$((F_MS - A_MS))
# for: 2s, evaluated every 1s: the evaluation at active_since + 2s fires it
[ "$D_MS" -ge 2000 ] && [ "$D_MS" -lt 2600 ] || fail "fired $D_MS ms after active_since (for: 2s)"
check
echo "fired $D_MS ms after active_since (for: 2s, interval 1s)"
assert_eq "$(n_events "type=alert.pending&subject=load-seen/$FP")" 1 "alert.pending events"
assert_eq "$(n_events "type=alert.firing&subject=load-seen/$FP")" 1 "alert.firing events"
req GET "/v1/events?type=alert.firing&subject=load-seen/$FP"
assert_contains "$BODY" '"state":"firing"' "alert.firing data"
assert_contains "$BODY" '"team":"ops"' "alert.firing data"
assert_contains "$BODY" "\"fingerprint\":\"$FP\"" "alert.firing data"

# ---- restarts keep it firing, with the same active_since, and fire nothing again ---------------
for sig in TERM 9; do
  PORT=${URL##*:}
  stop_keeld "$sig"
  start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s # the agent's address
  wait_for 10 agent_is "$A" online || fail "the agent did not come back after kill -$sig"
  sleep 3 # three more evaluations
  alerts_of "rule=load-seen"
  assert_eq "$(jget state)" firing "state after kill -$sig"
  assert_eq "$(jget active_since)" "$ACTIVE" "active_since after kill -$sig"
  assert_eq "$(jget fired_at)" "$FIRED" "fired_at after kill -$sig"
  assert_eq "$(n_events "type=alert.firing&subject=load-seen/$FP")" 1 "alert.firing events after kill -$sig"
  assert_eq "$(n_events "type=alert.pending&subject=load-seen/$FP")" 1 "alert.pending events after kill -$sig"
  req GET /v1/alert-rules/load-seen
  assert_status 200
  assert_eq "$(jget health)" ok "rule health after kill -$sig"
done

# ---- who may read and write ---------------------------------------------------------------------
make_user vera viewer
req GET /v1/alerts "" "$UTOKEN"
assert_status 200 "viewer lists alerts"
assert_contains "$BODY" "$FP" "viewer sees the alert"
req POST /v1/apply "@$TMP/load.yaml" "$UTOKEN"
assert_error 403 forbidden "viewer applies a rule"
req DELETE /v1/alert-rules/load-seen "" "$UTOKEN"
assert_error 403 forbidden "viewer deletes a rule"
req GET "/v1/alerts?state=bogus"
assert_error 400 bad_request "bad state"
req GET /v1/alert-rules/nope
assert_error 404 not_found "unknown rule"

# ---- an event rule: agent.offline for 1s, cleared by agent.online -------------------------
cat >"$TMP/down.yaml" <<'EOF'
kind: AlertRule
name: host-down
team: ops
event: {type: agent.offline, clear: agent.online, match: "env=prod"}
for: 1s
interval: 1s
severity: critical
annotations: {summary: "{{ $labels.instance }} is offline"}
EOF
apply "$TMP/down.yaml"
assert_status 200 "apply the event rule"
T_KILL=$(date +%s%3N)
stop_agent a KILL
wait_for 10 has_alert "rule=host-down" '"state":"firing"' || fail "host-down not firing: $(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/events?type=agent.*") $(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/alert-rules/host-down")"
check
alerts_of "rule=host-down"
HFP=$(jget fingerprint)
assert_contains "$BODY" "\"agent_id\":\"$A\"" "host-down labels"
assert_contains "$BODY" '"summary":"' "host-down annotation"
DF_MS=$(ms_of "$(jget fired_at)")
echo "host-down fired $((DF_MS - T_KILL)) ms after the agent was killed (heartbeat 1s: offline after 3 s, for: 1s)"
start_agent a --interval 1s
wait_for 10 agent_is "$A" online || fail "agent did not come back"
wait_for 5 has_alert "rule=host-down&state=resolved" '"state":"resolved"' || fail "host-down not resolved: $BODY"
check
alerts_of "rule=host-down"
assert_eq "$(jcount fingerprint)" 0 "host-down alerts after the agent is back"
for t in pending firing resolved; do
  assert_eq "$(n_events "type=alert.$t&subject=host-down/$HFP")" 1 "host-down alert.$t events"
done

# ---- the CLI ---------------------------------------------------------------------------------------
kc alert list
assert_eq "$KRC" 0 "alert list: $KERR"
assert_contains "$KOUT" "load-seen  firing" "alert list"
kc alert rules
assert_eq "$KRC" 0 "alert rules: $KERR"
assert_contains "$KOUT" "host-down" "alert rules"
assert_match "$KOUT" "load-seen +team ops +warning +1 firing, 0 pending" "alert rules"
kc alert list --state all --json
assert_eq "$KRC" 0
assert_contains "$KOUT" '"state":"resolved"' "alert list --state all --json"

# ---- deleting a rule resolves its alerts --------------------------------------------------------
req DELETE /v1/alert-rules/load-seen
assert_status 200 "delete"
assert_eq "$(jget name)" load-seen
assert_eq "$(n_events "type=alert.resolved&subject=load-seen/$FP")" 1 "alert.resolved on delete"
alerts_of "rule=load-seen&state=all"
assert_eq "$(jcount fingerprint)" 0 "alerts of a deleted rule"
req GET "/v1/audit?action=alert:write"
assert_contains "$BODY" '"target":"team/ops/alert/load-seen"' "audit"

stop_agent a
stop_keeld TERM
assert_eq "$KEELD_RC" 0 "keeld exit"
finish
