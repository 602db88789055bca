#!/usr/bin/env bash
# events.sh — events end to end with a real keeld and real keel-agents
# (docs/events.md): agent.enrolled / agent.online at enrollment, agent.offline
# after an agent is killed (short heartbeat) and agent.online when it comes
# back, apply.done (once per document that changed something), command.finished,
# agents' own events through POST /v1/agent/events (signed here with the
# agent's key, as lib.sh's agent_auth does), list filters and pagination, the
# SSE stream (live events, Last-Event-ID resume, across a keeld restart), bad
# queries (400 naming the parameter), 401/403 and per-item filtering by policy,
# the CLI (events list / watch), and a clean shutdown with streams open.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s

# stream SECS FILE [HEADER] [QUERY] — curl -N on the stream in the background
# for SECS seconds; sets SPID.
stream() {
  local args=(-s -N --max-time "$1" -H "Authorization: Bearer $TOKEN")
  [ -n "${3:-}" ] && args+=(-H "$3")
  curl "${args[@]}" "$URL/v1/events/stream${4:-}" >"$2" 2>/dev/null &
  SPID=$!
}
# events_of QUERY — GET /v1/events?QUERY as $TOKEN into BODY (200 required)
events_of() {
  req GET "/v1/events?$1"
  assert_status 200 "GET /v1/events?$1"
}
has_event() { get_has "/v1/events?$1" "$2"; } # QUERY NEEDLE — for wait_for
n_events() { # QUERY N — for wait_for: exactly N events match
  local b
  b=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/events?$1&limit=1000") || return 1
  [ "$(jcount type "$b")" = "$2" ]
}

# ---- a live stream from the start --------------------------------------------------------
stream 60 "$TMP/live.sse"
LIVE=$SPID
wait_for 5 grep -q '^: keel events' "$TMP/live.sse" || fail "the stream did not start"
check

# ---- enrollment: agent.enrolled, agent.online ----------------------------------------------
kc agent token create --uses 3
assert_eq "$KRC" 0 "agent token create: $KERR"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)
start_agent a --enroll-token "$ET" --tags app=checkout,env=prod,team.name=core
start_agent b --enroll-token "$ET" --tags app=search,env=prod
wait_enrolled a
A=$AID
wait_enrolled b
B=$AID
HOST_A=$(jget hostname "$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/agents/$A")")

events_of "type=agent.*&subject=$A"
assert_contains "$BODY" '"type":"agent.enrolled"' "agent.enrolled of a"
assert_contains "$BODY" '"type":"agent.online"' "agent.online of a"
assert_contains "$BODY" '"specversion":"1.0"' "CloudEvents shape"
assert_contains "$BODY" '"source":"keeld"' "source"
assert_contains "$BODY" "\"subject\":\"$A\"" "subject"
assert_contains "$BODY" '"datacontenttype":"application/json"' "datacontenttype"
assert_contains "$BODY" "\"instance\":\"$HOST_A\"" "labels.instance"
assert_contains "$BODY" "\"agent_id\":\"$A\"" "labels.agent_id"
assert_contains "$BODY" '"team_name":"core"' "tag team.name as label team_name"
assert_not_contains "$BODY" "\"subject\":\"$B\"" "subject filter"
assert_not_contains "$BODY" '"path"' "the policy path is not shown"
assert_match "$BODY" '"time":"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]{12}Z"' "time"
assert_match "$BODY" '"id":"evt_[a-z0-9]{16}"' "id"
# ordered by keelseq
SEQS=$(printf '%s' "$BODY" | grep -oE '"keelseq":[0-9]+' | cut -d: -f2 | tr '\n' ' ')
assert_eq "$SEQS" "$(printf '%s\n' $SEQS | sort -n | tr '\n' ' ')" "oldest first"

# ---- apply.done ------------------------------------------------------------------------------
RB=$(dirname "$0")/../../examples/runbooks/diagnostics.yaml
req POST /v1/apply "@$RB"
assert_status 200 "apply a runbook"
req POST /v1/apply "@$RB"
assert_status 200 "apply it again (no change)"
req POST '/v1/apply?dry_run=true' "@$RB"
assert_status 200 "dry run"
events_of "type=apply.done"
assert_eq "$(jcount type)" 1 "one apply.done for three applies, two of which changed nothing"
assert_contains "$BODY" '"subject":"Runbook/diagnostics"' "apply.done subject"
assert_contains "$BODY" '"kind":"Runbook","name":"diagnostics"' "apply.done data"
assert_contains "$BODY" '"op":"create"' "apply.done changes"

# ---- command.finished -------------------------------------------------------------------------
req POST /v1/commands "{\"target\":\"app=checkout\",\"argv\":[\"true\"]}"
assert_status 201 "run a command on a"
CMD=$(jget id)
wait_for 15 has_event "type=command.finished&subject=$CMD" '"status":"succeeded"' ||
  fail "no command.finished for $CMD"
check
events_of "type=command.finished&subject=$CMD"
assert_eq "$(jcount type)" 1 "one command.finished"
assert_contains "$BODY" '"succeeded":1' "command.finished counts"
req POST /v1/commands '{"target":"app=nothing","argv":["true"]}'
assert_status 201 "a command matching no host"
CMD0=$(jget id)
events_of "type=command.finished&subject=$CMD0"
assert_eq "$(jcount type)" 1 "finished at once when no host runs it"

# ---- execution.started / execution.finished / approval.requested ---------------------------------
cat >"$TMP/rb.yaml" <<'YAML'
kind: Runbook
name: ev-run
owner: {team: platform}
targets: "app=checkout"
steps:
  - name: hello
    command: {argv: ["true"]}
YAML
cat >"$TMP/rb2.yaml" <<'YAML'
kind: Runbook
name: ev-gate
owner: {team: platform}
targets: "app=checkout"
steps:
  - name: ok
    approval: {approvers: ["user:nobody"], message: "go?"}
  - name: hello
    command: {argv: ["true"]}
YAML
req POST '/v1/apply?file=rb.yaml' "@$TMP/rb.yaml"
assert_status 200 "apply ev-run"
req POST '/v1/apply?file=rb2.yaml' "@$TMP/rb2.yaml"
assert_status 200 "apply ev-gate"
req POST /v1/executions '{"runbook":"ev-run"}'
assert_status 201 "start ev-run"
EXE=$(jget id)
wait_for 15 has_event "type=execution.finished&subject=$EXE" '"status":"succeeded"' ||
  fail "no execution.finished for $EXE"
events_of "type=execution.*&subject=$EXE"
assert_eq "$(jcount type)" 2 "started and finished, once each"
assert_contains "$BODY" '"type":"execution.started"' "execution.started"
assert_contains "$BODY" '"runbook":"ev-run"' "execution data"
assert_contains "$BODY" "{\"agent_id\":\"$A\",\"hostname\":\"$HOST_A\",\"status\":\"succeeded\"}" "per-target status"
assert_contains "$BODY" '"owner":"admin"' "owner"
req POST /v1/executions '{"runbook":"ev-gate"}'
assert_status 201 "start ev-gate"
EXE2=$(jget id)
wait_for 10 has_event "type=approval.requested&subject=$EXE2" '"step":"ok"' ||
  fail "no approval.requested for $EXE2"
check
req POST "/v1/executions/$EXE2/cancel" '{}'
assert_status 200 "cancel ev-gate"
events_of "type=execution.finished&subject=$EXE2"
assert_contains "$BODY" '"status":"cancelled"' "execution.finished of a cancelled execution"

# ---- agents' own events (signed as agent a) -----------------------------------------------------
T1=$(date -u -d '1 min ago' +%Y-%m-%dT%H:%M:%S)
EV='{"events":[{"type":"service.down","subject":"nginx","time":"'$T1'Z","data":{"service":"nginx","labels":{"service":"nginx","instance":"spoofed"}}},{"type":"check.result","data":{"check":"disk","status":"CRITICAL","exit_code":2,"output":"DISK CRITICAL","perfdata":"/=95%","labels":{"check":"disk"}}}]}'
areq POST /v1/agent/events "$EV" "$(agent_auth a "$A" POST /v1/agent/events "$EV")"
assert_status 200 "POST /v1/agent/events"
assert_eq "$(jget accepted)" 2 "accepted"
events_of "type=service.*"
assert_contains "$BODY" "\"source\":\"agent/$A\"" "source of an agent's event"
assert_contains "$BODY" "\"subject\":\"$A/nginx\"" "subject prefixed with the agent id"
assert_contains "$BODY" "\"time\":\"$T1.000Z\"" "the agent's time"
assert_contains "$BODY" '"service":"nginx"' "own labels kept"
assert_contains "$BODY" "\"instance\":\"$HOST_A\"" "host labels win"
assert_not_contains "$BODY" "spoofed" "an agent cannot relabel itself"
events_of "type=check.result"
assert_contains "$BODY" '"status":"CRITICAL"' "check.result data"
req GET '/v1/audit?action=agent:report&limit=1000'
assert_eq "$(printf '%s' "$BODY" | grep -oE "\"target\":\"agent/$A/events\",\"outcome\":\"ok\"" | wc -l | tr -d ' ')" 1 \
  "one audit record per batch"
# refused: a type agents may not send, unknown fields, empty, unsigned, a replayed signature
BAD='{"events":[{"type":"service.up"},{"type":"agent.offline"}]}'
areq POST /v1/agent/events "$BAD" "$(agent_auth a "$A" POST /v1/agent/events "$BAD")"
assert_error 400 bad_request "an agent sending agent.offline"
assert_contains "$BODY" "events[1].type" "the 400 names the event"
events_of "type=service.up"
assert_eq "$(jcount type)" 0 "a refused batch stores nothing"
BAD='{"events":[{"type":"service.up","colour":"red"}]}'
areq POST /v1/agent/events "$BAD" "$(agent_auth a "$A" POST /v1/agent/events "$BAD")"
assert_error 400 bad_request "unknown field"
assert_contains "$BODY" "colour" "the 400 names the field"
BAD='{"events":[{"type":"file.changed","time":"yesterday"}]}'
areq POST /v1/agent/events "$BAD" "$(agent_auth a "$A" POST /v1/agent/events "$BAD")"
assert_error 400 bad_request "bad time"
assert_contains "$BODY" "events[0].time" "the 400 names the time"
areq POST /v1/agent/events "$EV" ""
assert_error 401 unauthorized "unsigned agent events"
AUTH=$(agent_auth b "$A" POST /v1/agent/events "$EV")
areq POST /v1/agent/events "$EV" "$AUTH"
assert_error 401 unauthorized "signed by b, claiming a"

# ---- list: filters, pagination, bad queries ----------------------------------------------------
events_of "type=agent*"
assert_not_contains "$BODY" '"type":"apply.done"' "prefix filter"
assert_contains "$BODY" '"type":"agent.online"' "prefix filter"
events_of "since=1h&type=agent.enrolled"
assert_eq "$(jcount type)" 2 "since=1h"
events_of "since=2000-01-01T00:00:00Z&type=agent.enrolled"
assert_eq "$(jcount type)" 2 "since RFC 3339"
events_of "since=2099-01-01T00:00:00Z"
assert_eq "$(jcount type)" 0 "since in the future"
events_of "limit=2"
assert_eq "$(jcount type)" 2 "limit=2"
CUR=$(jget next_cursor)
assert_match "$CUR" '^[0-9]+$' "next_cursor"
FIRST2=$BODY
events_of "limit=2&cursor=$CUR"
assert_eq "$(jcount type)" 2 "second page"
assert_ne "$BODY" "$FIRST2" "the second page differs"
events_of "limit=1000"
ALL=$(jcount type)
assert_eq "$(jget next_cursor)" null "last page"
for q in "type=Agent.Online:type" "type=a*b:type" "type=*x:type" "since=yesterday:since" "limit=0:limit" \
  "limit=1001:limit" "cursor=abc:cursor" "colour=red:colour" "subject=$(head -c 300 /dev/zero | tr '\0' s):subject"; do
  req GET "/v1/events?${q%:*}"
  assert_error 400 bad_request "GET /v1/events?${q%:*}"
  assert_contains "$BODY" "'${q##*:}'" "400 names ${q##*:}"
done
req GET "/v1/events/stream?limit=5"
assert_error 400 bad_request "limit is not a stream parameter"
req GET "/v1/events" "" ""
assert_error 401 unauthorized "GET /v1/events without a token"
req GET "/v1/events/stream" "" ""
assert_error 401 unauthorized "GET /v1/events/stream without a token"

# ---- CLI --------------------------------------------------------------------------------------------
kc events list --type agent.online
assert_eq "$KRC" 0 "keel events list: $KERR"
assert_contains "$KOUT" "SEQ" "table head"
assert_contains "$KOUT" "agent.online" "table row"
kc --json events list --type apply.done
assert_eq "$KRC" 0 "keel --json events list: $KERR"
assert_match "$KOUT" '^\{"specversion":"1.0"' "JSON lines"
kc events list --type Bad
assert_eq "$KRC" 1 "keel events list with a bad type"
assert_contains "$KERR" "type" "the error names the parameter"
"$KEEL" --server "$URL" --token "$TOKEN" events watch --type agent.offline --type service.* \
  >"$TMP/watch.out" 2>"$TMP/watch.err" &
WATCH=$!
_PIDS+=("$WATCH")

# ---- agent.offline / agent.online, live on the streams ---------------------------------------
sleep 0.5
stop_agent a KILL
wait_for 10 has_event "type=agent.offline&subject=$A" "agent.offline" || fail "no agent.offline for a"
check
events_of "type=agent.offline&subject=$A"
assert_eq "$(jcount type)" 1 "one agent.offline"
assert_contains "$BODY" "\"instance\":\"$HOST_A\"" "agent.offline labels"
wait_for 5 grep -q "agent.offline.*\"subject\":\"$A\"" "$TMP/live.sse" ||
  fail "the live stream did not get agent.offline: $(tail -c 600 "$TMP/live.sse")"
check
grep -q '^id: [0-9][0-9]*$' "$TMP/live.sse" || fail "no SSE id lines"
check
assert_contains "$(cat "$TMP/live.sse")" "data: {\"specversion\":\"1.0\"" "SSE data lines"
assert_contains "$(cat "$TMP/live.sse")" '"type":"apply.done"' "the live stream saw everything"
wait_for 5 grep -q "agent.offline *$A" "$TMP/watch.out" || fail "keel events watch: $(cat "$TMP/watch.out" "$TMP/watch.err")"
check
assert_not_contains "$(cat "$TMP/watch.out")" "agent.online" "watch --type filters"
start_agent a
wait_for 10 n_events "type=agent.online&subject=$A" 2 ||
  fail "no second agent.online after a came back"
check

# ---- Last-Event-ID: resume from the store, then live ----------------------------------------
events_of "type=apply.done"
APPLY_SEQ=$(jget keelseq)
stream 3 "$TMP/resume.sse" "Last-Event-ID: $((APPLY_SEQ - 1))"
wait "$SPID"
RES=$(cat "$TMP/resume.sse")
assert_contains "$RES" "id: $APPLY_SEQ
" "resumed at the event after Last-Event-ID"
assert_not_contains "$RES" "id: $((APPLY_SEQ - 1))
" "nothing before it"
assert_eq "$(printf '%s\n' "$RES" | grep -c '^id: ')" "$(printf '%s\n' "$RES" | grep -c '^data: ')" "one data line per id"
stream 3 "$TMP/since.sse" "" "?since=1h&type=agent.enrolled,apply.done"
wait "$SPID"
assert_eq "$(grep -c '^data: ' "$TMP/since.sse")" 5 "since= with two types: 2 enrolled + 3 apply.done"
curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" -H "Last-Event-ID: x" \
  "$URL/v1/events/stream" >"$TMP/code" || true
assert_eq "$(cat "$TMP/code")" 400 "a bad Last-Event-ID"

# ---- policy: per-item filtering and 403 --------------------------------------------------------
ORG=$(dirname "$0")/../policy/org-decentralized.yaml
req POST /v1/apply "@$ORG"
assert_status 200 "apply the organization"
for u in chen otto max; do
  req POST /v1/tokens "{\"name\":\"t\",\"user\":\"$u\"}"
  assert_status 201 "token for $u"
  eval "TOK_$u=$(jget token)"
done
# an event's path is its subject's as it was when emitted: these come after the apply
EVA='{"events":[{"type":"service.down","subject":"web","data":{"service":"web"}}]}'
areq POST /v1/agent/events "$EVA" "$(agent_auth a "$A" POST /v1/agent/events "$EVA")"
assert_status 200 "service.down from a (checkout)"
EVB='{"events":[{"type":"service.down","subject":"db","data":{"service":"db"}}]}'
areq POST /v1/agent/events "$EVB" "$(agent_auth b "$B" POST /v1/agent/events "$EVB")"
assert_status 200 "service.down from b (search)"
req GET "/v1/events?type=service.down" "" "$TOK_chen"
assert_status 200 "chen (checkout) lists events"
assert_contains "$BODY" "\"subject\":\"$A/web\"" "chen sees checkout's host events"
assert_not_contains "$BODY" "\"subject\":\"$B/db\"" "chen does not see search's"
req GET "/v1/events?type=service.down"
assert_contains "$BODY" "\"subject\":\"$B/db\"" "admin sees all"
req GET "/v1/events?type=command.finished" "" "$TOK_chen"
assert_contains "$BODY" "\"subject\":\"$CMD\"" "members read the events collection"
req GET /v1/events "" "$TOK_otto"
assert_error 403 forbidden "otto (in no team) once an organization exists"
req GET /v1/events/stream "" "$TOK_max"
assert_error 403 forbidden "a partner without event:read"
curl -s -N --max-time 3 -H "Authorization: Bearer $TOK_chen" -H "Last-Event-ID: 0" \
  "$URL/v1/events/stream?type=service.down" >"$TMP/chen.sse" 2>/dev/null
assert_contains "$(cat "$TMP/chen.sse")" "$A/web" "chen's stream"
assert_not_contains "$(cat "$TMP/chen.sse")" "$B/db" "chen's stream is filtered too"
# a stream outlives the request that authenticated it: revoking its token ends it (<= 5 s)
req POST /v1/tokens '{"name":"stream","user":"chen"}'
assert_status 201 "a second token for chen"
TOK_S=$(jget token)
TOK_S_ID=$(jget id)
curl -s -N --max-time 30 -H "Authorization: Bearer $TOK_S" "$URL/v1/events/stream" >"$TMP/rev.sse" 2>/dev/null &
SSE_PID=$!
wait_for 5 grep -q "keel events" "$TMP/rev.sse" || fail "the stream did not start"
req DELETE "/v1/tokens/$TOK_S_ID"
assert_status 200 "revoke the stream's token"
T0=$(date +%s%N)
ENDED=no
for _ in $(seq 1 80); do kill -0 "$SSE_PID" 2>/dev/null || { ENDED=yes; break; }; sleep 0.1; done
assert_eq "$ENDED" yes "the stream ended after its token was revoked"
echo "  stream ended $(( ($(date +%s%N) - T0) / 1000000 )) ms after the revocation"
assert_contains "$(cat "$TMP/rev.sse")" "token no longer valid" "the stream says why it ended"
wait "$SSE_PID" 2>/dev/null

# ---- restart: streams resume with Last-Event-ID; clean shutdown with streams open --------------
events_of "limit=1000"
LAST=$(printf '%s' "$BODY" | grep -oE '"keelseq":[0-9]+' | tail -n 1 | cut -d: -f2)
stream 60 "$TMP/open.sse"
OPEN=$SPID
sleep 0.3
T0=$SECONDS
stop_keeld TERM
assert_eq "$KEELD_RC" 0 "keeld stops cleanly with streams open"
[ $((SECONDS - T0)) -lt 8 ] || fail "shutdown waited on the streams ($((SECONDS - T0)) s)"
check
wait "$OPEN" 2>/dev/null
wait "$LIVE" 2>/dev/null
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:${URL##*:}" --heartbeat 1s # the agents' address
stream 4 "$TMP/after.sse" "Last-Event-ID: $LAST" "?type=agent.*"
wait "$SPID"
assert_contains "$(cat "$TMP/after.sse")" '"type":"agent.online"' "agents back online after the restart, streamed"
assert_not_contains "$(cat "$TMP/after.sse")" "id: $LAST
" "nothing at or before Last-Event-ID"
events_of "limit=1000"
assert_eq "$(( $(jcount type) >= ALL ))" 1 "events survive the restart"
kill "$WATCH" 2>/dev/null
wait "$WATCH" 2>/dev/null

finish
