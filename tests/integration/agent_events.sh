#!/usr/bin/env bash
# agent_events.sh — the events keel-agent reports by itself
# (docs/agent-protocol.md, "Events"), end to end: a real keeld, a real agent
# with --interval 1s watching a real sleeping process (a copy of sleep under
# its own name), a file, and a Nagios-style check.
#   - kill the process: service.down is listed by GET /v1/events within 2 s
#     of the kill (the figure is printed); start it again: service.up
#   - change the file: file.changed with the content's BLAKE2b-256 (b2sum)
#   - the check flips OK -> CRITICAL: check.result, with its perfdata
#   - an agent restart reports nothing unchanged again
#   - keeld down: the agent spools its events (DIR/events) and delivers
#     them, in order, when keeld is back
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D"

kc agent token create --uses 1
assert_eq "$KRC" 0 "agent token create: $KERR"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)

# The service: sleep under a name no other process has (at most 15 bytes,
# the kernel's comm).
SVC=kwsvc$$
SVC=${SVC:0:15}
cp /bin/sleep "$TMP/$SVC" || fail "cp /bin/sleep"
SVC_PID=""
start_svc() {
  "$TMP/$SVC" 600 &
  SVC_PID=$!
  _PIDS+=("$SVC_PID")
}
stop_svc() {
  kill -KILL "$SVC_PID" 2>/dev/null
  wait "$SVC_PID" 2>/dev/null
  SVC_PID=""
}

CONF=$TMP/etc/app.conf
FLAG=$TMP/flag
mkdir -p "$TMP/etc"
printf 'listen 80\n' >"$CONF"
CHECK="flip=if [ -e $FLAG ]; then echo 'CRITICAL - flag is set|flag=1;;1'; exit 2; fi; echo 'OK - no flag|flag=0;;1'"
# --process too: its metrics' /proc walk then counts for --watch-process.
AGENT_ARGS=(--interval 1s --process "$SVC" --watch-process "$SVC" --watch-file "$CONF"
  --check-shell --check-interval 1s --check "$CHECK")

# events_of QUERY — GET /v1/events?QUERY into BODY (200 required)
events_of() {
  req GET "/v1/events?$1&limit=1000"
  assert_status 200 "GET /v1/events?$1"
}
# n_is QUERY N — for wait_for: exactly N events match
n_is() {
  local b
  b=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/events?$1&limit=1000") || return 1
  [ "$(jcount type "$b")" = "$2" ]
}
now_ms() { date +%s%3N; }
# listed_within MS QUERY N — wait (polling every 20 ms) until exactly N events
# match, at most MS ms from T0; sets DT to the ms from T0 it took.
listed_within() {
  while ! n_is "$2" "$3"; do
    [ $(($(now_ms) - T0)) -lt "$1" ] || fail "$2: not $3 events ${1} ms after: $(agent_log w)"
    sleep 0.02
  done
  DT=$(($(now_ms) - T0))
}

start_svc
start_agent w --enroll-token "$ET" "${AGENT_ARGS[@]}"
wait_enrolled w

# At start: the service runs (nothing to say), the check's first result is
# reported once, the file is only looked at.
wait_for 5 n_is "type=check.result&subject=$AID/flip" 1 || fail "no first check.result: $(agent_log w)"
events_of "type=check.result&subject=$AID/flip"
assert_contains "$BODY" '"status":"OK"' "first check result"
assert_contains "$BODY" '"output":"OK - no flag"' "check output"
assert_contains "$BODY" '"perfdata":"flag=0;;1"' "check perfdata"
assert_contains "$BODY" '"exit_code":0' "check exit code"
assert_contains "$BODY" "\"source\":\"agent/$AID\"" "source of an agent's event"
assert_contains "$BODY" "\"agent_id\":\"$AID\"" "keeld's host labels"
assert_contains "$BODY" '"check":"flip"' "the event's own label"
events_of "type=service.*"
assert_eq "$(jcount type)" 0 "service events while the service runs"
events_of "type=file.changed"
assert_eq "$(jcount type)" 0 "file events before a change"

# ---- the service dies: service.down within 2 s ----------------------------------------
sleep 1.2 # a tick or two with it running
T0=$(now_ms)
stop_svc
listed_within 5000 "type=service.down&subject=$AID/$SVC" 1
echo "service.down listed by GET /v1/events ${DT} ms after the kill"
[ "$DT" -le 2000 ] || fail "service.down listed ${DT} ms after the kill, want <= 2000"
check
events_of "type=service.down&subject=$AID/$SVC"
assert_contains "$BODY" '"pid_count":0' "pid_count of service.down"
assert_contains "$BODY" "\"service\":\"$SVC\"" "service label"
assert_contains "$BODY" "\"instance\":" "instance label"

T0=$(now_ms)
start_svc
listed_within 5000 "type=service.up&subject=$AID/$SVC" 1
echo "service.up listed ${DT} ms after the start"
events_of "type=service.up&subject=$AID/$SVC"
assert_contains "$BODY" '"pid_count":1' "pid_count of service.up"

# ---- the file changes ----------------------------------------------------------------------
printf 'listen 8080\n' >"$CONF.new"
mv "$CONF.new" "$CONF" # replaced by rename, as configuration tools do
SUM=$(b2sum -l 256 "$CONF" | cut -d' ' -f1)
wait_for 5 n_is "type=file.changed" 1 || fail "no file.changed: $(agent_log w)"
events_of "type=file.changed&subject=$AID/$CONF"
assert_contains "$BODY" '"change":"modified"' "file change"
assert_contains "$BODY" "\"blake2b\":\"$SUM\"" "content hash (b2sum -l 256)"
assert_contains "$BODY" '"size":12' "file size"
chmod 600 "$CONF"
wait_for 5 n_is "type=file.changed" 2 || fail "no file.changed after chmod: $(agent_log w)"
events_of "type=file.changed"
assert_contains "$BODY" '"change":"attrib"' "chmod"
rm "$CONF"
wait_for 5 n_is "type=file.changed" 3 || fail "no file.changed after rm: $(agent_log w)"
events_of "type=file.changed"
assert_contains "$BODY" '"change":"deleted"' "rm"

# ---- the check flips --------------------------------------------------------------------------
touch "$FLAG"
wait_for 5 n_is "type=check.result&subject=$AID/flip" 2 || fail "no CRITICAL check.result: $(agent_log w)"
events_of "type=check.result&subject=$AID/flip"
assert_contains "$BODY" '"status":"CRITICAL"' "check flipped"
assert_contains "$BODY" '"output":"CRITICAL - flag is set"' "CRITICAL output"
assert_contains "$BODY" '"exit_code":2' "CRITICAL exit code"
sleep 2.2 # two more runs, still CRITICAL: nothing new
assert_eq "$(n_is "type=check.result&subject=$AID/flip" 2 && echo same)" same "check.result count while unchanged"

# ---- an agent restart reports nothing unchanged ---------------------------------------------
stop_agent w
assert_eq "$AGENT_RC" 0 "agent exit status"
assert_file_mode "$TMP/agent-w/watch.json" 600
before=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/events?limit=1000" | grep -oE '"type":"(service|file|check)\.[a-z]*"' | wc -l)
start_agent w "${AGENT_ARGS[@]}"
wait_enrolled w
sleep 2.5
after=$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/events?limit=1000" | grep -oE '"type":"(service|file|check)\.[a-z]*"' | wc -l)
assert_eq "$after" "$before" "agent events after a restart with nothing changed"

# ---- keeld down: spooled, then delivered in order --------------------------------------------
PORT=${URL##*:}
stop_keeld
stop_svc
rm "$FLAG"
wait_for 10 sh -c "ls '$TMP/agent-w/events/'*.json >/dev/null 2>&1" || fail "no spooled events: $(agent_log w)"
grep -q 'events: .*batches are spooled and retried' <<<"$(agent_log w)" ||
  fail "the agent did not say it spools events: $(agent_log w)"
check
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT"
wait_for 10 n_is "type=service.down&subject=$AID/$SVC" 2 || fail "spooled service.down not delivered: $(agent_log w)"
wait_for 10 n_is "type=check.result&subject=$AID/flip" 3 || fail "spooled check.result not delivered: $(agent_log w)"
wait_for 5 sh -c "! ls '$TMP/agent-w/events/'*.json >/dev/null 2>&1" || fail "spool not emptied"
# In keeld's order (oldest first) the agent's times only go up: the spooled
# batches were delivered in order.
for q in "type=check.result&subject=$AID/flip" "type=service.*&subject=$AID/$SVC"; do
  events_of "$q"
  printf '%s' "$BODY" | grep -oE '"time":"[^"]*"' | sort -c 2>/dev/null || fail "$q: out of order: $BODY"
  check
done
events_of "type=check.result&subject=$AID/flip"
assert_match "$(printf '%s' "$BODY" | grep -oE '"status":"[A-Z]*"' | tr '\n' ' ')" '^"status":"OK" "status":"CRITICAL" "status":"OK" $' "check results"
events_of "type=service.*&subject=$AID/$SVC"
assert_match "$(printf '%s' "$BODY" | grep -oE '"type":"service\.[a-z]*"' | tr '\n' ' ')" '^"type":"service.down" "type":"service.up" "type":"service.down" $' "service events"

stop_agent w
assert_eq "$AGENT_RC" 0 "agent exit status"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
