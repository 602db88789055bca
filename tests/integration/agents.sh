#!/usr/bin/env bash
# agents.sh — keeld plus three real keel-agent processes on 127.0.0.1:
# enrollment (valid, used up, expired, unknown token), identity kept across
# restarts, selectors on /v1/agents, inventory, tags and stale versions,
# liveness (offline after 3 silent heartbeats, online again), retirement,
# and the agent routes refusing unsigned and wrongly signed requests.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s

# ---- enrollment -------------------------------------------------------------------------
kc agent token create --uses 3 --tags site=lab
assert_eq "$KRC" 0 "agent token create: $KERR"
assert_contains "$KOUT" "uses_max    3" "token create output"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)
assert_match "$ET" '^kenr_' "enrollment token"

start_agent a --enroll-token "$ET" --tags env=prod,role=web
start_agent b --enroll-token "$ET" --tags env=prod,role=db
start_agent c --enroll-token "$ET" --tags env=dev,role=web
wait_enrolled a
A=$AID
wait_enrolled b
B=$AID
wait_enrolled c
C=$AID
assert_match "$A" '^agt_[a-z0-9]+$' "agent id of a"
assert_ne "$A" "$B" "ids of a and b"
assert_ne "$B" "$C" "ids of b and c"
assert_ne "$A" "$C" "ids of a and c"
assert_file_mode "$TMP/agent-a/identity.json" 600
assert_contains "$(agent_log a)" "enrolled as $A" "agent a log"

req GET "/v1/agents/$A"
assert_status 200 "get agent a"
assert_eq "$(jget status)" online "status of a"
assert_contains "$BODY" '"tags":{' "agent a tags"
assert_contains "$BODY" '"env":"prod"' "agent a tags"
assert_contains "$BODY" '"role":"web"' "agent a tags"
assert_contains "$BODY" '"site":"lab"' "agent a carries the token's tags"

req GET /v1/agent-tokens
assert_status 200 "list enrollment tokens"
assert_contains "$BODY" '"uses":3' "token used three times"
assert_not_contains "$BODY" "$ET" "enrollment token list"
assert_not_contains "$BODY" "${ET##*_}" "enrollment token list"

# a token for one use, used twice: the second agent is refused
kc agent token create --uses 1
assert_eq "$KRC" 0 "agent token create --uses 1: $KERR"
ET1=$(printf '%s\n' "$KOUT" | tail -n 1)
start_agent once1 --enroll-token "$ET1" --tags env=test
wait_enrolled once1
mkdir -p "$TMP/agent-once2"
chmod 700 "$TMP/agent-once2"
timeout 20 "$KEEL_AGENT" --server "$URL" --state "$TMP/agent-once2" --enroll-token "$ET1" \
  --tags env=test >"$TMP/once2.out" 2>"$TMP/once2.err"
assert_eq "$?" 1 "exit status of an agent enrolling with a used-up token"
assert_contains "$(cat "$TMP/once2.err")" "used up" "used-up refusal"
[ ! -e "$TMP/agent-once2/identity.json" ] || fail "an identity after a refused enrollment"
check
req GET '/v1/audit?action=agent:enroll&limit=1000'
assert_status 200 "audit agent:enroll"
assert_match "$BODY" '"action":"agent:enroll","target":"[^"]*","outcome":"denied","status":401' \
  "denied enrollment on the record"
assert_contains "$BODY" "used up" "recorded reason of the denied enrollment"
assert_eq "$(printf '%s' "$BODY" | grep -oE '"action":"agent:enroll","target":"agent/agt_[a-z0-9]+","outcome":"ok"' | wc -l | tr -d ' ')" 4 \
  "successful enrollments on the record"

# an expired token
kc agent token create --ttl 1s
assert_eq "$KRC" 0 "agent token create --ttl 1s: $KERR"
ETX=$(printf '%s\n' "$KOUT" | tail -n 1)
sleep 2
mkdir -p "$TMP/agent-x"
timeout 20 "$KEEL_AGENT" --server "$URL" --state "$TMP/agent-x" --enroll-token "$ETX" \
  >/dev/null 2>"$TMP/x.err"
assert_eq "$?" 1 "exit status with an expired token"
assert_contains "$(cat "$TMP/x.err")" "expired" "expired refusal"
# an unknown one (well formed, never issued)
timeout 20 "$KEEL_AGENT" --server "$URL" --state "$TMP/agent-x" \
  --enroll-token kenr_aaaaaaaaaaaaaaaa_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa >/dev/null 2>"$TMP/x.err"
assert_eq "$?" 1 "exit status with an unknown token"
assert_contains "$(cat "$TMP/x.err")" "unknown" "unknown-token refusal"
req GET '/v1/audit?action=agent:enroll&limit=1000'
assert_contains "$BODY" "expired" "expired enrollment on the record"
assert_contains "$BODY" "unknown" "unknown-token enrollment on the record"
stop_agent once1
assert_eq "$AGENT_RC" 0 "exit status of an agent stopped by SIGTERM"

# ---- selectors ----------------------------------------------------------------------------
nagents() { printf '%s' "$BODY" | grep -oE '"kind":"agent"' | wc -l | tr -d ' '; }
req GET '/v1/agents?target=env=prod'
assert_status 200 "agents env=prod"
assert_eq "$(nagents)" 2 "agents with env=prod"
assert_contains "$BODY" "\"id\":\"$A\""
assert_contains "$BODY" "\"id\":\"$B\""
req GET '/v1/agents?target=role%20in%20(web),env!%3Dprod'
assert_status 200 "agents role in (web),env!=prod"
assert_eq "$(nagents)" 1 "agents with role in (web),env!=prod"
assert_contains "$BODY" "\"id\":\"$C\""
req GET "/v1/agents?target=id%3D$B"
assert_eq "$(nagents)" 1 "agents by id"
req GET '/v1/agents?target=env=prod&status=online'
assert_status 200 "online prod agents"
assert_eq "$(nagents)" 2 "online prod agents"
req GET '/v1/agents?status=offline&target=env!%3Dtest'
assert_status 200 "offline agents"
assert_eq "$(nagents)" 0 "offline agents (all three poll)"
req GET '/v1/agents?target=env%20prod'
assert_error 400 bad_request "invalid selector"
assert_contains "$BODY" "column 5" "invalid selector message"
assert_contains "$BODY" "target" "invalid selector message"
req GET '/v1/agents?target=role%20in%20(web'
assert_error 400 bad_request "unterminated set"
assert_contains "$BODY" "column" "unterminated set message"
kc agent list --target 'env=dev'
assert_eq "$KRC" 0 "keel agent list --target: $KERR"
assert_contains "$KOUT" "$C" "keel agent list env=dev"
assert_not_contains "$KOUT" "$A" "keel agent list env=dev"
kc agent list --target 'env prod'
assert_ne "$KRC" 0 "keel agent list with a bad selector"

# ---- inventory -----------------------------------------------------------------------------
kc agent show "$A"
assert_eq "$KRC" 0 "keel agent show: $KERR"
for k in hostname status agent_version inventory; do assert_contains "$KOUT" "$k" "agent show"; done
for k in '"hostname":' '"os":' '"kernel":' '"cpu":' '"memory_bytes":' '"disks":' '"interfaces":' '"mount":'; do
  assert_contains "$(printf '%s' "$KOUT" | tr -d ' ')" "$k" "inventory in agent show"
done
assert_contains "$KOUT" "$(uname -r)" "kernel in the inventory"
assert_contains "$KOUT" "env=prod" "tags in agent show"

# ---- tags ----------------------------------------------------------------------------------
kc agent tag "$C" team=x
assert_eq "$KRC" 0 "keel agent tag: $KERR"
req GET '/v1/agents?target=team=x'
assert_eq "$(nagents)" 1 "agents with team=x"
assert_contains "$BODY" "\"id\":\"$C\""
req GET "/v1/agents/$C"
V=$(jget version)
assert_contains "$BODY" '"env":"dev"' "tag kept the other tags"
kc agent tag "$C" team-
assert_eq "$KRC" 0 "keel agent tag k-: $KERR"
req GET '/v1/agents?target=team'
assert_eq "$(nagents)" 0 "agents with a team tag after its removal"
req PATCH "/v1/agents/$C" "{\"version\":$V,\"tags\":{\"env\":\"stale\"}}"
assert_error 409 conflict "stale agent version"
req GET "/v1/agents/$C"
assert_contains "$BODY" '"env":"dev"' "a stale patch changes nothing"
req PATCH "/v1/agents/$C" "{\"version\":$(jget version),\"tags\":{\"id\":\"x\"}}"
assert_error 400 bad_request "reserved tag key"

# ---- liveness -------------------------------------------------------------------------------
stop_agent c
assert_eq "$AGENT_RC" 0 "agent c exit status on SIGTERM"
T0=$SECONDS
wait_for 8 agent_is "$C" offline || fail "agent c not offline 8 s after it stopped: $(agent_status "$C")"
echo "agent c offline $((SECONDS - T0)) s after SIGTERM"
assert_match "$((SECONDS - T0))" '^[0-6]$' "seconds until offline"
req GET '/v1/agents?status=offline'
assert_contains "$BODY" "\"id\":\"$C\"" "offline list"
req GET '/v1/agents?status=online'
assert_not_contains "$BODY" "\"id\":\"$C\"" "online list"
# restarted without a token: same identity, no new enrollment
start_agent c
wait_enrolled c
assert_eq "$AID" "$C" "agent id after a restart"
assert_not_contains "$(tail -n "+$((${AGENT_MARK[c]} + 1))" "$TMP/agent-c.log")" "enrolled as" "restart log"
wait_for 5 agent_is "$C" online || fail "agent c not online again: $(agent_status "$C")"
check
req GET '/v1/agents?target=env=dev'
assert_eq "$(nagents)" 1 "agents with env=dev after the restart (no duplicate)"

# ---- unsigned and wrongly signed requests --------------------------------------------------
for p in poll results inventory; do
  areq POST "/v1/agent/$p" '{}' ""
  assert_error 401 unauthorized "unsigned POST /v1/agent/$p"
done
areq POST /v1/agent/enroll '{}' ""
assert_error 401 unauthorized "enroll without a token"
areq POST /v1/agent/poll '{}' "KeelAgent $A:$(date +%s%3N):abcdefghijklmnop:$(printf '0%.0s' $(seq 128))"
assert_error 401 unauthorized "a zero signature"
areq POST /v1/agent/poll '{}' "Bearer $TOKEN"
assert_error 401 unauthorized "an API token on an agent route"
# control: a request signed with a's own key as a is accepted ...
areq POST /v1/agent/poll '{}' "$(agent_auth a "$A" POST /v1/agent/poll '{}')"
assert_status 200 "poll signed by a's key as a"
assert_contains "$BODY" '"heartbeat_ms":1000' "poll answer"
# ... but the same key claiming b's id is not
areq POST /v1/agent/poll '{}' "$(agent_auth a "$B" POST /v1/agent/poll '{}')"
assert_error 401 unauthorized "poll signed by a's key claiming b"
areq POST /v1/agent/inventory '{"hostname":"evil","inventory":{}}' \
  "$(agent_auth a "$B" POST /v1/agent/inventory '{"hostname":"evil","inventory":{}}')"
assert_error 401 unauthorized "inventory signed by a's key claiming b"
# a signature over another body is refused too
AUTH=$(agent_auth a "$A" POST /v1/agent/inventory '{}')
areq POST /v1/agent/inventory '{"hostname":"evil","inventory":{}}' "$AUTH"
assert_error 401 unauthorized "signature over another body"
# and a replayed nonce
AUTH=$(agent_auth a "$A" POST /v1/agent/poll '{}')
areq POST /v1/agent/poll '{}' "$AUTH"
assert_status 200 "first use of a signature"
areq POST /v1/agent/poll '{}' "$AUTH"
assert_error 401 unauthorized "replayed signature"
req GET "/v1/agents/$B"
assert_ne "$(jget hostname)" evil "hostname of b after the forged inventory"
req GET '/v1/audit?action=agent:report&limit=1000'
assert_match "$BODY" '"action":"agent:report","target":"[^"]*","outcome":"denied","status":401' \
  "refused agent reports on the record"
req GET '/v1/audit?action=agent:poll&limit=1000'
assert_match "$BODY" '"action":"agent:poll","target":"[^"]*","outcome":"denied","status":401' \
  "refused polls on the record"
NDEN=$(printf '%s' "$BODY" | grep -oE '"outcome":"denied","status":401' | wc -l | tr -d ' ')
[ "$NDEN" -ge 5 ] || fail "want >= 5 refused polls on the record, got $NDEN: $BODY"
check

# ---- retirement -------------------------------------------------------------------------------
kc agent retire "$B"
assert_eq "$KRC" 0 "keel agent retire: $KERR"
assert_contains "$KOUT" "retired $B"
wait_for 6 agent_logged b "poll refused" || fail "agent b never logged a refused poll: $(agent_log b | tail -n 5)"
check
assert_contains "$(agent_log b)" "401" "agent b's log of the refused poll"
kill -0 "${AGENT_PIDS[b]}" 2>/dev/null || fail "a retired agent keeps running (and retrying)"
check
req GET /v1/agents
assert_status 200 "list after retirement"
assert_not_contains "$BODY" "\"id\":\"$B\"" "agent list after retirement"
req GET '/v1/agents?target=env=prod'
assert_eq "$(nagents)" 1 "prod agents after retirement"
req GET "/v1/agents/$B"
assert_status 200 "get a retired agent"
assert_eq "$(jget status)" retired "status of a retired agent"
assert_ne "$(jget retired_at)" null "retired_at"
areq POST /v1/agent/poll '{}' "$(agent_auth b "$B" POST /v1/agent/poll '{}')"
assert_error 401 unauthorized "poll signed by a retired agent's own key"
req PATCH "/v1/agents/$B" "{\"version\":$(jget version),\"tags\":{\"env\":\"back\"}}"
assert_ne "$STATUS" 200 "patching a retired agent"
kc agent retire "$B"
assert_ne "$KRC" 0 "retiring an agent twice"
stop_agent b
assert_eq "$AGENT_RC" 0 "retired agent exit status on SIGTERM"

# the others are unaffected (once1, stopped long ago, is env=test)
req GET '/v1/agents?status=online&target=env!%3Dtest'
assert_eq "$(nagents)" 2 "online agents at the end"
assert_contains "$BODY" "\"id\":\"$A\"" "online agents at the end"
assert_contains "$BODY" "\"id\":\"$C\"" "online agents at the end"

# ---- audit chain --------------------------------------------------------------------------------
kc audit verify
assert_eq "$KRC" 0 "keel audit verify: $KOUT $KERR"
assert_contains "$KOUT" intact "keel audit verify"

stop_agent a
assert_eq "$AGENT_RC" 0 "agent a exit status"
stop_agent c
assert_eq "$AGENT_RC" 0 "agent c exit status"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
