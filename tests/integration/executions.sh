#!/usr/bin/env bash
# executions.sh — runbook executions on keeld with six real keel-agent
# processes: a hostile parameter arrives as one literal argv element (and
# one shell word); concurrency 2 never runs three targets at once (from the
# recorded timestamps); max_errors 1 with three failing hosts stops after
# the second failure; batches [1, "50%", "100%"] run in order with manual
# pauses; an approval gate blocks until approved, the requester cannot
# approve, a rejection cancels; a cancel stops the steps running on the
# hosts; kill -9 of keeld mid-step resumes without
# running a finished step twice and reports the step in flight as
# interrupted; a schedule's missed run happens once at start, an overlapping
# one is skipped and recorded; every decision is in the audit trail.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s
export KEEL_SERVER=$URL KEEL_TOKEN=$TOKEN
MARK=$TMP/marks
mkdir -p "$MARK"

kc agent token create --uses 6 --tags fleet=x
assert_eq "$KRC" 0 "agent token create: $KERR"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)
for n in 1 2 3 4 5 6; do
  fail_tag=0
  [ "$n" -ge 4 ] && fail_tag=1
  start_agent "h$n" --enroll-token "$ET" --tags "n=$n,bad=$fail_tag"
done
for n in 1 2 3 4 5 6; do wait_enrolled "h$n"; done

# apply_rb NAME YAML-BODY — applies a runbook owned by team ops
apply_rb() {
  printf 'kind: Runbook\nname: %s\nowner: {team: ops}\n%s\n' "$1" "$2" >"$TMP/$1.yaml"
  kc apply -f "$TMP/$1.yaml"
  assert_eq "$KRC" 0 "apply runbook $1: $KERR"
}
# start RUNBOOK [PARAMS-JSON] [TOKEN] — POST /v1/executions; X = its id
start() {
  req POST /v1/executions "{\"runbook\":\"$1\",\"params\":${2:-{\}}}" "${3:-$TOKEN}"
  X=$(jget id)
}
x_state() { jget state "$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/executions/$1?targets=false")"; }
x_is() { [ "$(x_state "$1")" = "$2" ]; }
x_final() { case "$(x_state "$1")" in succeeded | failed | cancelled | timed_out) return 0 ;; esac; return 1; }
# wait_final ID — until the execution ends (60 s); BODY holds it with targets
wait_final() {
  wait_for 60 x_final "$1" || fail "execution $1 did not finish: $(x_state "$1")"
  req GET "/v1/executions/$1"
}

# ---- hostile parameters stay data --------------------------------------------------
HOSTILE='a; rm -rf / $(touch '"$MARK"'/pwned) `id` "q" '"'"'s'"'"' 
second line'
HJ=$(jq -cn --arg v "$HOSTILE" '{v: $v}')
apply_rb hostile 'parameters: [{name: v, type: string, required: true}]
targets: "fleet=x,n=1"
steps:
  - name: argv
    command: {argv: [printf, "%s|", "{{ params.v }}"]}
  - name: shell
    command: {shell: "printf '"'"'%s|'"'"' {{ params.v }}"}'
start hostile "$HJ"
assert_status 201 "start hostile: $BODY"
wait_final "$X"
assert_eq "$(jget state)" succeeded "hostile execution succeeded: $BODY"
assert_eq "$(printf '%s' "$BODY" | jq -r '.targets[0].steps[0].stdout')" "$HOSTILE|" "argv: the value arrived as one literal element"
assert_eq "$(printf '%s' "$BODY" | jq -r '.targets[0].steps[1].stdout')" "$HOSTILE|" "shell: the value arrived as one word"
[ -e "$MARK/pwned" ] && fail "a hostile parameter ran code"
check

# ---- script and http steps: a health gate against a real HTTP server (keeld's own) ----
apply_rb gate 'parameters: [{name: v, type: string, required: true}]
targets: "fleet=x,n=2"
steps:
  - name: body
    script:
      interpreter: /bin/sh
      body: |
        set -eu
        value={{ params.v }}
        printf "%s|" "$value"
  - name: healthy
    http: {url: "'"$URL"'/healthz", expect_status: 200, expect_body: ok}
  - name: missing
    http: {url: "'"$URL"'/nope", expect_status: 200}
    on_failure: continue
  - name: after
    assert: {step: missing, field: exit_code, equals: "1"}'
start gate "$HJ"
assert_status 201 "start gate: $BODY"
wait_final "$X"
assert_eq "$(jget state)" succeeded "script and http steps: $(printf '%s' "$BODY" | jq -c '.targets[0].steps')"
assert_eq "$(printf '%s' "$BODY" | jq -r '.targets[0].steps[0].stdout')" "$HOSTILE|" "script: the value is one word"
assert_contains "$(printf '%s' "$BODY" | jq -r '.targets[0].steps[1].stderr')" "HTTP 200" "the health gate passed"
assert_eq "$(printf '%s' "$BODY" | jq -r '.targets[0].steps[2].status')" failed "a 404 fails the gate"
assert_contains "$(printf '%s' "$BODY" | jq -r '.targets[0].steps[2].stderr')" "HTTP 404, expected 200" "and says why"
[ -e "$MARK/pwned" ] && fail "a hostile parameter ran code in a script"
check

# ---- bad starts change nothing ------------------------------------------------------
start hostile '{}'
assert_status 400 "a required parameter missing"
assert_contains "$BODY" "params.v" "the error names it"
start hostile '{"v":"x","nope":1}'
assert_status 400 "an unknown parameter"
start nosuch '{}'
assert_status 404 "an unknown runbook"
req POST /v1/executions '{"runbook":"hostile","params":{"v":"x"},"extra":1}'
assert_status 400 "an unknown field"
req GET "/v1/executions?runbook=hostile"
assert_eq "$(printf '%s' "$BODY" | jq '.items | length')" 1 "none of them created an execution"

# ---- concurrency 2: never three at once ---------------------------------------------
apply_rb conc 'targets: "fleet=x"
rate: {concurrency: 2}
steps:
  - name: work
    command: {argv: [sleep, "0.6"]}'
start conc
assert_status 201 "start conc"
wait_final "$X"
assert_eq "$(jget state)" succeeded "conc succeeded"
# the most targets running at one instant, from their start/end times
MAXRUN=$(printf '%s' "$BODY" | jq '[.targets[] | [.started_at, .ended_at]] as $t
  | [$t[] | .[0] as $s | [$t[] | select(.[0] <= $s and .[1] > $s)] | length] | max')
assert_eq "$MAXRUN" 2 "concurrency 2: at most (and at some point exactly) 2 targets ran at once"
assert_eq "$(printf '%s' "$BODY" | jq '.summary.succeeded')" 6 "all six ran"
kc execution watch "$X"
assert_eq "$KRC" 0 "watch of a succeeded execution exits 0: $KERR"
assert_contains "$KOUT" "succeeded (6/6 targets succeeded)" "watch ends with the state"
kc runbook start hostile -p "v=from the cli; \$(id)" --watch
assert_eq "$KRC" 0 "runbook start --watch follows it to success: $KOUT $KERR"
XC=$(printf '%s\n' "$KOUT" | grep -oE 'exe_[a-z0-9]{16}' | head -n 1)
kc execution show "$XC"
assert_contains "$KOUT" "#2 shell  succeeded  exit 0" "execution show lists the step attempts"
kc --json execution show "$XC"
assert_contains "$KOUT" 'from the cli; $(id)|' "the step output has the value intact"

# ---- max_errors 1 with three failing hosts -------------------------------------------
apply_rb errs 'targets: "fleet=x"
rate: {concurrency: 1, max_errors: 1}
steps:
  - name: check
    command: {argv: [test, "{{ target.tags.bad }}", "=", "0"]}'
start errs
assert_status 201 "start errs"
wait_final "$X"
assert_eq "$(jget state)" failed "too many errors: failed"
assert_contains "$(jget reason)" "more than max_errors (1)" "the reason says why"
assert_eq "$(printf '%s' "$BODY" | jq '.summary.failed')" 2 "stopped after the second failure"
# nothing started after the second failure
LASTFAIL=$(printf '%s' "$BODY" | jq '[.targets | to_entries[] | select(.value.status == "failed") | .key] | max')
STARTED=$(printf '%s' "$BODY" | jq '[.targets[] | select(.status != "cancelled")] | length')
assert_eq "$STARTED" "$((LASTFAIL + 1))" "no target started after the second failure"
assert_eq "$(printf '%s' "$BODY" | jq '[.targets[] | select(.status == "cancelled")] | length')" $((6 - STARTED)) "the rest were never started"

ERRS=$X
kc execution watch "$ERRS"
assert_eq "$KRC" 1 "watch of a failed execution exits 1"
assert_contains "$KOUT" "more than max_errors" "and says why"
# retry --failed-only: a new execution on the targets that did not succeed
kc execution retry "$ERRS" --failed-only
assert_eq "$KRC" 0 "retry --failed-only: $KERR"
RETRY=$(printf '%s\n' "$KOUT" | grep -oE 'exe_[a-z0-9]{16}' | head -n 1)
assert_ne "$RETRY" "" "retry printed the new execution"
wait_final "$RETRY"
assert_eq "$(jget retry_of)" "$ERRS" "the retry names its original"
assert_eq "$(printf '%s' "$BODY" | jq '.summary.targets')" $((2 + 6 - STARTED)) "only the failed and never-started targets were retried"

# ---- rollback-to, assert, cancel --------------------------------------------------------
apply_rb rollback 'targets: "fleet=x,n=1"
steps:
  - name: prep
    command: {argv: [echo, prepared]}
  - name: check
    assert: {step: prep, field: stdout, equals: prepared}
  - name: flaky
    command: {argv: ["false"]}
    on_failure: rollback-to prep'
start rollback
wait_final "$X"
assert_eq "$(jget state)" failed "a step failing twice fails its target"
assert_eq "$(printf '%s' "$BODY" | jq -c '[.targets[0].steps[] | .name + ":" + .status]')" '["prep:succeeded","check:succeeded","flaky:failed","prep:succeeded","check:succeeded","flaky:failed"]' "rollback-to ran prep again, once"
assert_eq "$(printf '%s' "$BODY" | jq '.targets[0].rolled_back')" true "the target says it rolled back"
# a number unique to this run, so process checks see only our steps
SLOW="^sleep 30.$$$RANDOM"
apply_rb slow "targets: \"fleet=x\"
steps:
  - name: wait
    command: {argv: [sleep, \"${SLOW#^sleep }\"]}"
start slow
wait_for 20 x_is "$X" running || fail "slow did not start"
slow_up() { [ "$(pgrep -fc -- "$SLOW")" = 6 ]; }
wait_for 10 slow_up || fail "the step did not start on all six hosts: $(pgrep -af -- "$SLOW")"
T0=$(date +%s%3N)
kc execution cancel "$X"
assert_eq "$KRC" 0 "cancel: $KERR"
wait_for 5 sh -c "! pgrep -f -- '$SLOW' >/dev/null" || fail "cancelled steps still run on the hosts: $(pgrep -af -- "$SLOW")"
check
echo "execution cancel to six processes gone: $(($(date +%s%3N) - T0)) ms"
wait_final "$X"
assert_eq "$(jget state)" cancelled "cancelled"
assert_contains "$(jget reason)" "cancelled by admin" "the reason says who"
assert_eq "$(printf '%s' "$BODY" | jq -c '[.targets[].status] | unique')" '["cancelled"]' "every target cancelled"
req POST "/v1/executions/$X/cancel" ''
assert_status 409 "cancelling a finished execution is a conflict"

# ---- batches [1, 50%, 100%] with manual pauses ----------------------------------------
apply_rb batches 'targets: "fleet=x"
rate: {batches: [1, "50%", "100%"], batch_pause: every}
steps:
  - name: work
    command: {argv: [sleep, "0.2"]}'
start batches
assert_status 201 "start batches"
wait_for 20 x_is "$X" paused || fail "no pause after the canary: $(x_state "$X")"
req GET "/v1/executions/$X"
assert_eq "$(printf '%s' "$BODY" | jq '[.targets[] | select(.status != "pending")] | length')" 1 "the canary batch is one target"
assert_contains "$(jget reason)" "keel execution resume" "the pause says how to go on"
kc execution resume "$X"
assert_eq "$KRC" 0 "resume: $KERR"
wait_for 20 x_is "$X" paused || fail "no pause after batch 2: $(x_state "$X")"
req GET "/v1/executions/$X"
assert_eq "$(printf '%s' "$BODY" | jq '[.targets[] | select(.status != "pending")] | length')" 3 "50% of 6 done after batch 2"
req POST "/v1/executions/$X/resume" ''
assert_status 200 "resume again"
req POST "/v1/executions/$X/resume" ''
assert_status 409 "resuming what is not paused is a conflict"
wait_final "$X"
assert_eq "$(jget state)" succeeded "batches succeeded"
assert_eq "$(printf '%s' "$BODY" | jq -c '[.targets[].batch]')" "[1,2,2,3,3,3]" "targets ran in batches 1, 2, 2, 3, 3, 3"
# each batch started only after the previous one had wholly finished
ORDER=$(printf '%s' "$BODY" | jq '[range(1;3) as $b | ([.targets[] | select(.batch == $b) | .ended_at] | max) <= ([.targets[] | select(.batch == $b + 1) | .started_at] | min)] | all')
assert_eq "$ORDER" true "batches never overlapped"

# ---- approvals ---------------------------------------------------------------------------
make_user pat operator
PAT=$UTOKEN
make_user sam operator
SAM=$UTOKEN
apply_rb gated 'targets: "fleet=x,n=2"
steps:
  - name: ok
    approval: {approvers: ["user:pat", "user:sam"], message: "go?"}
  - name: act
    command: {argv: [sh, -c, "echo ran >> \"$0\"", "'"$MARK"'/gated"]}'
start gated '{}' "$SAM"
assert_status 201 "sam starts gated"
wait_for 20 x_is "$X" waiting_approval || fail "not waiting for approval: $(x_state "$X")"
sleep 0.5
[ -e "$MARK/gated" ] && fail "the step behind the gate ran before approval"
check
req POST "/v1/executions/$X/approve" '{"comment":"me"}' "$SAM"
assert_status 403 "the requester cannot approve"
assert_contains "$BODY" "cannot approve" "and is told why"
req POST "/v1/executions/$X/approve" '{}'
assert_status 403 "admin is not a listed approver"
assert_eq "$(x_state "$X")" waiting_approval "still waiting"
TOKEN=$PAT kc execution approve "$X" --comment "looks good"
assert_eq "$KRC" 0 "pat approves: $KERR"
wait_final "$X"
assert_eq "$(jget state)" succeeded "approved: it ran"
assert_eq "$(cat "$MARK/gated")" ran "the gated step ran once"
assert_eq "$(printf '%s' "$BODY" | jq -r '.decisions[0].user + " " + .decisions[0].decision + " " + .decisions[0].comment')" "pat approve looks good" "the decision is recorded"
start gated '{}' "$SAM"
wait_for 20 x_is "$X" waiting_approval || fail "not waiting: $(x_state "$X")"
req POST "/v1/executions/$X/reject" '{"comment":"not today"}' "$PAT"
assert_status 200 "pat rejects"
wait_final "$X"
assert_eq "$(jget state)" cancelled "a rejection cancels"
assert_contains "$(jget reason)" "rejected by pat: not today" "and says who and why"
req GET "/v1/audit?action=runbook:approve&limit=100"
assert_contains "$BODY" "approved by pat" "the approval is audited"
assert_contains "$BODY" "rejected by pat" "the rejection is audited"
assert_contains "$BODY" '"outcome":"failed"' "the refused self-approval is audited"

# ---- kill -9 mid-execution ------------------------------------------------------------------
apply_rb durable 'targets: "fleet=x"
steps:
  - name: one
    command: {argv: [sh, -c, "echo x >> \"$0\"", "'"$MARK"'/one.{{ target.id }}"]}
  - name: two
    command: {argv: [sleep, "4"]}
    on_failure: continue
  - name: three
    command: {argv: [sh, -c, "echo x >> \"$0\"", "'"$MARK"'/three.{{ target.id }}"]}'
start durable
assert_status 201 "start durable"
two_running() {
  req GET "/v1/executions/$X"
  [ "$(printf '%s' "$BODY" | jq '[.targets[] | select(.step == "two")] | length')" = 6 ]
}
wait_for 20 two_running || fail "step two never ran everywhere: $BODY"
PORT=${URL##*:}
stop_keeld KILL
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s
wait_final "$X"
assert_eq "$(jget state)" succeeded "resumed after kill -9 and finished"
assert_eq "$(printf '%s' "$BODY" | jq -c '[.targets[].steps[] | select(.name == "two") | .status] | unique')" '["interrupted"]' "the step in flight is reported interrupted"
assert_eq "$(printf '%s' "$BODY" | jq '[.targets[].steps[] | select(.name == "one")] | length')" 6 "step one recorded once per target"
for f in "$MARK"/one.* "$MARK"/three.*; do
  assert_eq "$(wc -l <"$f")" 1 "$(basename "$f") ran exactly once"
done
assert_eq "$(ls "$MARK"/one.* | wc -l)" 6 "step one ran on all six"
assert_eq "$(ls "$MARK"/three.* | wc -l)" 6 "step three ran on all six after the restart"

# ---- the runbook's timeout ----------------------------------------------------------------
apply_rb bounded 'targets: "fleet=x,n=1"
timeout: 1m
steps:
  - name: long
    command: {argv: [sleep, "120"]}
    timeout: 5m'
start bounded
assert_status 201 "start bounded"
assert_ne "$(jget deadline_at)" null "the execution has a deadline"
wait_for 20 x_is "$X" running || fail "bounded did not start"
# make the minute pass: move the stored deadline while keeld is down
PORT=${URL##*:}
stop_keeld TERM
sql "$D" "UPDATE executions SET deadline_ms = 1000 WHERE id = '$X'"
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s
wait_final "$X"
assert_eq "$(jget state)" timed_out "past its timeout: timed_out"
assert_eq "$(printf '%s' "$BODY" | jq -r '.targets[0].steps[0].status')" cancelled "the step in flight was withdrawn"

# ---- schedules ---------------------------------------------------------------------------------
apply_rb nightly 'targets: "fleet=x,n=3"
schedule: {rate: 1m, owner: pat}
steps:
  - name: hold
    sleep: 30s'
kc schedule list
assert_contains "$KOUT" nightly "schedule list shows it"
req GET "/v1/executions?runbook=nightly"
assert_eq "$(printf '%s' "$BODY" | jq '.items | length')" 0 "a new schedule does not fire at once"
# keeld was down for ten slots: one run at start, not ten
PORT=${URL##*:}
stop_keeld TERM
sql "$D" "UPDATE schedules SET base_ms = base_ms - 600000 WHERE runbook = 'nightly'"
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s
sched_runs() {
  req GET "/v1/executions?runbook=nightly"
  [ "$(printf '%s' "$BODY" | jq '.items | length')" = "$1" ]
}
wait_for 10 sched_runs 1 || fail "the missed run did not happen: $BODY"
sleep 1.5
sched_runs 1 || fail "more than one run for the missed slots: $BODY"
check
assert_eq "$(printf '%s' "$BODY" | jq -r '.items[0].requested_by + " " + (.items[0].by_schedule | tostring)')" "pat true" "it runs as the schedule's owner"
# the next slot comes while that run still holds: skipped and recorded
PORT=${URL##*:}
stop_keeld TERM
sql "$D" "UPDATE schedules SET last_slot_ms = last_slot_ms - 60000 WHERE runbook = 'nightly'"
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s
skipped() { [ "$(sql "$D" "SELECT COUNT(*) FROM schedule_events WHERE runbook = 'nightly' AND outcome = 'skipped'")" = 1 ]; }
wait_for 10 skipped || fail "the overlapping run was not recorded as skipped"
check
sched_runs 1 || fail "an overlapping run started: $BODY"
check
req GET /v1/schedules
assert_eq "$(printf '%s' "$BODY" | jq '.items[0].skipped')" 1 "schedule list counts the skip"
req GET "/v1/audit?action=runbook:start&limit=1000"
assert_contains "$BODY" "user:pat (schedule nightly)" "scheduled starts are audited as the owner"
assert_contains "$BODY" "still running" "the skip is audited with its reason"

kc audit verify
assert_eq "$KRC" 0 "audit chain intact: $KOUT $KERR"
finish
