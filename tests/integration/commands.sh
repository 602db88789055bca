#!/usr/bin/env bash
# commands.sh — keeld plus three real keel-agent processes on 127.0.0.1
# running commands: keel run on a selector (text and --json), no match,
# offline hosts skipped, timeouts killing the whole process group, the
# output cap, hostile argv, cancel stopping running processes (SIGTERM, then
# SIGKILL), kill -9 of an agent mid-command (interrupted,
# once), a keeld restart under connected agents, a forged job refused by the
# agent, and the audit of every run (argv, hosts, exit codes, BLAKE2b of the
# output; env names but never values) with the chain intact.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s
# a tag unique to this test run, so that process checks see only our commands
U=$$$RANDOM

kc agent token create --uses 3
assert_eq "$KRC" 0 "agent token create: $KERR"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)
start_agent a --enroll-token "$ET" --tags env=prod,role=web
start_agent b --enroll-token "$ET" --tags env=prod,role=db
start_agent c --enroll-token "$ET" --tags env=dev,role=web
wait_enrolled a
A=$AID
wait_enrolled b
B=$AID
wait_enrolled c
C=$AID
HOST=$(jget hostname "$(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/agents/$A")")
assert_ne "$HOST" "" "hostname of agent a"

# run_obj RUN_ID [JSON] — that run's object out of a command (default $BODY)
run_obj() {
  printf '%s' "${2-$BODY}" | grep -oE "\\{\"run_id\":\"$1\"(\"([^\"\\\\]|\\\\.)*\"|[^\"}])*\\}" | head -n 1
}
# wait_done CMD_ID [SECS] — poll GET /v1/commands/ID until done (BODY holds it)
cmd_done() {
  req GET "/v1/commands/$1"
  [ "$STATUS" = 200 ] && [ "$(jget "done")" = true ]
}
wait_done() {
  wait_for "${2:-20}" cmd_done "$1" || fail "command $1 not done in ${2:-20} s: $BODY"
}
# post_cmd JSON — POST /v1/commands; sets CMD to the id
post_cmd() {
  req POST /v1/commands "$1"
  assert_status 201 "POST /v1/commands $1"
  CMD=$(jget id)
  assert_match "$CMD" '^cmd_' "command id"
}
# audit_recs — the records of the audit page in $BODY, one a line
audit_recs() { printf "%s" "$BODY" | sed "s/},{\"seq\":/}\\n{\"seq\":/g"; }
# proc_gone PATTERN — no process whose command line matches PATTERN (for wait_for)
proc_gone() { ! pgrep -f -- "$1" >/dev/null; }

# ---- keel run on a selector -------------------------------------------------------------------
kc run --target env=prod -- uname -n
assert_eq "$KRC" 0 "keel run env=prod: $KOUT $KERR"
assert_eq "$(printf '%s\n' "$KOUT" | grep -c '^=== ')" 2 "result headers of two hosts"
assert_contains "$KOUT" "($A): exit 0" "run output of a"
assert_contains "$KOUT" "($B): exit 0" "run output of b"
assert_not_contains "$KOUT" "$C" "run output (c is env=dev)"
assert_eq "$(printf '%s\n' "$KOUT" | grep -cx -- "$HOST")" 2 "both hosts' output"
assert_contains "$KERR" "on 2 host(s)" "keel run summary"
assert_contains "$KERR" "2 of 2 host(s) succeeded" "keel run summary"

kc --json run --target env=prod -- uname -n
assert_eq "$KRC" 0 "keel --json run: $KERR"
assert_eq "$(printf '%s\n' "$KOUT" | wc -l | tr -d ' ')" 2 "JSON lines of keel --json run"
assert_eq "$(printf '%s\n' "$KOUT" | grep -c '^{"run_id":"run_.*}$')" 2 "one JSON object per host"
LINE_A=$(printf '%s\n' "$KOUT" | grep "\"agent_id\":\"$A\"")
LINE_B=$(printf '%s\n' "$KOUT" | grep "\"agent_id\":\"$B\"")
assert_eq "$(jget status "$LINE_A")" exited "status on a"
assert_eq "$(jget exit_code "$LINE_A")" 0 "exit code on a"
assert_eq "$(jget stdout "$LINE_A")" "$HOST\\n" "stdout on a"
RUN_A=$(jget run_id "$LINE_A")
RUN_B=$(jget run_id "$LINE_B")
WANT_DIGEST=$(printf '%s\n' "$HOST" | b2sum -l 256 | cut -d' ' -f1)
EMPTY_DIGEST=$(printf '' | b2sum -l 256 | cut -d' ' -f1)
assert_eq "$(jget stdout_blake2b "$LINE_A")" "$WANT_DIGEST" "stdout_blake2b on a = b2sum -l 256"
assert_eq "$(jget stderr_blake2b "$LINE_A")" "$EMPTY_DIGEST" "stderr_blake2b on a"

# the audit: who, what argv, which hosts; per host exit code and digests
req GET '/v1/audit?action=exec:run&limit=1000'
assert_status 200 "audit exec:run"
REC=$(audit_recs | grep "\"action\":\"exec:run\"" | tail -n 1)
assert_contains "$REC" '"actor":"user:admin"' "exec:run record: who"
assert_contains "$REC" '\"argv\":[\"uname\",\"-n\"]' "exec:run record: argv"
assert_contains "$REC" "$A" "exec:run record: host a"
assert_contains "$REC" "$B" "exec:run record: host b"
assert_not_contains "$REC" "$C" "exec:run record: c is not a host"
req GET '/v1/audit?action=agent:report&limit=1000'
assert_status 200 "audit agent:report"
for r in "$RUN_A" "$RUN_B"; do
  REC=$(printf '%s' "$BODY" | grep -oE "\"detail\":\"run $r:[^\"]*\"")
  assert_eq "$(printf '%s\n' "$REC" | grep -c .)" 1 "agent:report records of $r"
  assert_contains "$REC" "exit_code=0" "agent:report record of $r"
  assert_contains "$REC" "stdout_blake2b=$WANT_DIGEST" "agent:report digest of $r = b2sum -l 256"
  assert_contains "$REC" "stderr_blake2b=$EMPTY_DIGEST" "agent:report stderr digest of $r"
done
assert_match "$BODY" "\"actor\":\"agent:$A\",\"action\":\"agent:report\",\"target\":\"command/[^\"]*/run/$RUN_A\"" \
  "agent:report record names the agent and the run"

# nothing matches: exit 1
kc run --target env=nowhere -- true
assert_eq "$KRC" 1 "keel run on a selector matching nothing"
assert_contains "$KERR" "no agent matches" "no-match message"
kc run --target 'env nowhere' -- true
assert_ne "$KRC" 0 "keel run with an invalid selector"
assert_contains "$KERR" "column" "invalid selector message"

# a failing command: exit 1, the code shown
kc run --target "id=$A" -- sh -c 'echo oops >&2; exit 3'
assert_eq "$KRC" 1 "keel run of a failing command"
assert_contains "$KOUT" "exit 3" "exit code in the output"
assert_contains "$KERR" "oops" "stderr of the command"

# hostile argv is passed literally, never through a shell
kc run --target "id=$A" -- echo '$(id)' ';' '|' '&&' '`id`' '>' "$TMP/hostile"
assert_eq "$KRC" 0 "keel run with shell metacharacters: $KERR"
assert_contains "$KOUT" "\$(id) ; | && \`id\` > $TMP/hostile" "argv printed literally"
assert_not_contains "$KOUT" "uid=" "no command substitution"
[ ! -e "$TMP/hostile" ] || fail "a '>' in argv redirected output"
check

# env values reach the command but never the audit
kc run --target "id=$A" --env SECRET=hunter2 -- printenv SECRET
assert_eq "$KRC" 0 "keel run --env: $KERR"
assert_contains "$KOUT" hunter2 "the command sees its env"
req GET '/v1/audit?limit=1000'
assert_status 200 "audit"
assert_contains "$BODY" SECRET "env name in the audit"
assert_not_contains "$BODY" hunter2 "the audit"
kc audit log --limit 1000
assert_not_contains "$KOUT" hunter2 "keel audit log"
sqlite3 "$D/keel.db" "SELECT * FROM audit" >"$TMP/audit.dump" 2>/dev/null || true
grep -q hunter2 "$TMP/audit.dump" && fail "hunter2 in the audit table"
check

# ---- offline hosts are skipped ---------------------------------------------------------------
stop_agent c
wait_for 8 agent_is "$C" offline || fail "agent c not offline: $(agent_status "$C")"
kc --json run --target role=web -- true
assert_eq "$KRC" 1 "keel run with an offline host"
LINE_C=$(printf '%s\n' "$KOUT" | grep "\"agent_id\":\"$C\"")
assert_eq "$(jget status "$LINE_C")" skipped "status of the offline host's run"
assert_contains "$(jget error "$LINE_C")" offline "error of the skipped run"
assert_eq "$(jget status "$(printf '%s\n' "$KOUT" | grep "\"agent_id\":\"$A\"")")" exited "the online host still ran"
req GET '/v1/audit?action=exec:run&limit=1000'
REC=$(audit_recs | grep "\"action\":\"exec:run\"" | tail -n 1)
assert_contains "$REC" '\"skipped\":[\"'"$C" "exec:run record lists the skipped host"
kc run --target role=web -- true
assert_eq "$KRC" 1 "keel run (text) with an offline host"
assert_contains "$KERR" "on 1 host(s), 1 skipped (offline)" "keel run summary with an offline host"
assert_contains "$KOUT" "($C): skipped: offline" "skipped host in the output"
start_agent c
wait_enrolled c
assert_eq "$AID" "$C" "agent c's id after its restart"
wait_for 5 agent_is "$C" online || fail "agent c not online again"
check

# ---- timeouts kill the process group ----------------------------------------------------------
S1="^sleep 30.${U}1"
T0=$(date +%s%3N)
kc --json run --target "id=$A" --timeout 1s -- sleep "30.${U}1"
T1=$(date +%s%3N)
assert_eq "$KRC" 1 "keel run of a command that times out"
assert_eq "$(jget status "$KOUT")" timeout "status after the timeout"
assert_eq "$(jget exit_code "$KOUT")" null "exit code after the timeout"
D_MS=$(jget duration_ms "$KOUT")
[ "$D_MS" -ge 900 ] && [ "$D_MS" -le 2500 ] || fail "duration of a 1 s timeout: $D_MS ms"
check
[ $((T1 - T0)) -le 4000 ] || fail "keel run of a 1 s timeout took $((T1 - T0)) ms"
check
wait_for 3 proc_gone "$S1" || fail "the timed-out command is still running: $(pgrep -af -- "$S1")"
check
# a grandchild in the background is killed too
kc --json run --target "id=$A" --timeout 1s --shell -- "sleep 30.${U}2 & sleep 30.${U}3; echo never"
assert_eq "$KRC" 1 "keel run --shell that times out"
assert_eq "$(jget status "$KOUT")" timeout "status of the shell after the timeout"
assert_not_contains "$KOUT" never "output of the timed-out shell"
wait_for 3 proc_gone "^sleep 30.${U}2" || fail "the background grandchild survived the timeout: $(pgrep -af -- "^sleep 30.${U}2")"
check
wait_for 3 proc_gone "^sleep 30.${U}3" || fail "the shell's child survived the timeout"
check

# ---- cancel stops what still runs on the hosts ---------------------------------------------------
# procs_up PATTERN N — exactly N processes match (for wait_for)
procs_up() { [ "$(pgrep -fc -- "$1")" = "$2" ]; }
S6="^sleep 60.${U}5"
post_cmd "{\"target\":\"env=prod\",\"shell\":\"echo started; sleep 60.${U}5\",\"timeout\":\"2m\"}"
wait_for 10 procs_up "$S6" 2 || fail "the command did not start on both prod hosts: $(pgrep -af -- "$S6")"
check
T0=$(date +%s%3N)
kc command cancel "$CMD"
assert_eq "$KRC" 0 "keel command cancel: $KERR"
assert_contains "$KOUT" "2 of 2 run(s) cancelled" "keel command cancel says how many"
wait_for 5 proc_gone "$S6" || fail "cancelled command still running: $(pgrep -af -- "$S6")"
check
echo "cancel to both processes gone: $(($(date +%s%3N) - T0)) ms"
# the hosts' outcome arrives after the withdrawal and is kept under "cancelled"
host_outcomes() {
  req GET "/v1/commands/$CMD"
  [ "$(printf '%s' "$BODY" | jq '[.runs[] | select(.ended_at != null)] | length')" = 2 ]
}
wait_for 10 host_outcomes || fail "the hosts never reported the cancelled runs: $BODY"
check
assert_eq "$(printf '%s' "$BODY" | jq -c '[.runs[].status] | unique')" '["cancelled"]' "runs cancelled"
assert_eq "$(printf '%s' "$BODY" | jq -c '[.runs[].stdout] | unique')" '["started\n"]' "output up to the cancel kept"
assert_eq "$(printf '%s' "$BODY" | jq -c '[.runs[].signal] | unique')" '[15]' "ended by SIGTERM"
assert_contains "$(printf '%s' "$BODY" | jq -r '.runs[0].error')" "cancelled by user:admin; on the host: cancelled: cancelled by keeld: SIGTERM to the process group" "the run says who cancelled and what the host did"
assert_eq "$(printf '%s' "$BODY" | jq -c '[.summary.cancelled, .done]')" '[2,true]' "summary of the cancelled command"
req POST "/v1/commands/$CMD/cancel" ''
assert_error 409 conflict "cancelling a finished command"
assert_contains "$BODY" "nothing to cancel" "the 409 says why"
req POST "/v1/commands/cmd_nosuchcommand00/cancel" ''
assert_status 404 "cancelling an unknown command"
req POST "/v1/commands/$CMD/cancel" '{"force":true}'
assert_status 400 "cancel takes no fields"
req GET "/v1/events?type=command.finished&subject=$CMD"
assert_eq "$(printf '%s' "$BODY" | jq -r '.items[0].data.status')" cancelled "command.finished says cancelled"
req GET '/v1/audit?action=exec:run&limit=1000'
assert_contains "$BODY" "command $CMD: 2 runs withdrawn" "the cancel is audited"
req GET '/v1/audit?action=agent:report&limit=1000'
assert_contains "$BODY" "withdrawn earlier; the host's outcome kept: status=cancelled" "the late outcome is audited"
# a command that ignores SIGTERM is killed 5 s later
S7="^sleep 60.${U}6"
post_cmd "{\"target\":\"id=$A\",\"shell\":\"trap '' TERM; sleep 60.${U}6\",\"timeout\":\"2m\"}"
wait_for 10 procs_up "$S7" 1 || fail "the TERM-proof command did not start"
check
T0=$(date +%s%3N)
kc command cancel "$CMD"
assert_eq "$KRC" 0 "keel command cancel (TERM ignored): $KERR"
sleep 3
assert_eq "$(pgrep -fc -- "$S7")" 1 "SIGTERM ignored: still running 3 s after the cancel"
wait_for 8 proc_gone "$S7" || fail "TERM-proof command survived the cancel: $(pgrep -af -- "$S7")"
check
echo "cancel to SIGKILL'd process gone: $(($(date +%s%3N) - T0)) ms"
killed_outcome() {
  req GET "/v1/commands/$CMD"
  [ "$(printf '%s' "$BODY" | jq -r '.runs[0].signal')" = 9 ]
}
wait_for 10 killed_outcome || fail "no SIGKILL outcome: $BODY"
check
assert_contains "$(printf '%s' "$BODY" | jq -r '.runs[0].error')" "SIGKILL 5000 ms later" "the run says it was killed"

# Ctrl-C on keel run cancels the command on its hosts and shows what they did
S8="^sleep 60.${U}8"
# (perl: a background job of a script starts with SIGINT ignored, which keel keeps)
perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die "exec: $!"' -- \
  "$KEEL" --server "$URL" --token "$TOKEN" run --target env=prod --shell -- "echo hi; sleep 60.${U}8" \
  >"$TMP/ctrlc.out" 2>"$TMP/ctrlc.err" &
KR=$!
_PIDS+=("$KR")
wait_for 10 procs_up "$S8" 2 || fail "keel run did not start on both hosts: $(cat "$TMP/ctrlc.err")"
check
kill -INT "$KR"
wait "$KR"
assert_eq "$?" 1 "exit status of keel run after Ctrl-C"
wait_for 3 proc_gone "$S8" || fail "Ctrl-C left the command running: $(pgrep -af -- "$S8")"
check
assert_contains "$(cat "$TMP/ctrlc.err")" "cancelling command" "keel run says it cancels"
assert_contains "$(cat "$TMP/ctrlc.err")" "0 of 2 host(s) succeeded (cancelled)" "keel run's summary"
assert_eq "$(grep -c '^=== .*: cancelled: cancelled by user:admin' "$TMP/ctrlc.out")" 2 "both hosts' runs shown cancelled: $(cat "$TMP/ctrlc.out")"
assert_eq "$(grep -c '^hi$' "$TMP/ctrlc.out")" 2 "their output up to the cancel"

# ---- the output cap --------------------------------------------------------------------------
post_cmd "{\"target\":\"id=$A\",\"shell\":\"yes abcdefgh | tr -d '\\\\n' | head -c 3000000\",\"timeout\":\"20s\"}"
wait_done "$CMD" 25
R=$(run_obj "$(jget run_id)")
assert_eq "$(jget status "$R")" exited "status of the big-output command"
assert_eq "$(jget stdout_truncated "$R")" true stdout_truncated
assert_eq "$(jget stderr_truncated "$R")" false stderr_truncated
OUT=$(jget stdout "$R")
assert_eq "${#OUT}" 1048576 "bytes of stored output"
assert_eq "${OUT:0:16}" abcdefghabcdefgh "start of stored output"
CAPD=$(yes abcdefgh | tr -d '\n' | head -c 1048576 | b2sum -l 256 | cut -d' ' -f1)
assert_eq "$(jget stdout_blake2b "$R")" "$CAPD" "digest of the stored (capped) output"
req GET '/v1/audit?action=agent:report&limit=1000'
assert_contains "$BODY" "stdout_blake2b=$CAPD" "audited digest of the capped output"
# a smaller cap set on the command
post_cmd "{\"target\":\"id=$A\",\"argv\":[\"head\",\"-c\",\"5000\",\"/dev/zero\"],\"output_cap\":1024}"
wait_done "$CMD" 10
R=$(run_obj "$(jget run_id)")
assert_eq "$(jget stdout_truncated "$R")" true "stdout_truncated at output_cap 1024"
# NUL is valid UTF-8: the bytes come back as \u0000 in "stdout"
assert_eq "$(printf "%s" "$R" | grep -o "\\\\u0000" | wc -l | tr -d " ")" 1024 "bytes kept at output_cap 1024"
assert_eq "$(jget stdout_blake2b "$R")" "$(head -c 1024 /dev/zero | b2sum -l 256 | cut -d" " -f1)" "digest at output_cap 1024"

# ---- kill -9 an agent mid-command --------------------------------------------------------------
S5="^sleep 60.${U}4"
"$KEEL" --server "$URL" --token "$TOKEN" --json run --target "id=$A" -- sleep "60.${U}4" \
  >"$TMP/k9.out" 2>"$TMP/k9.err" &
K9=$!
_PIDS+=("$K9")
wait_for 10 sh -c "ls '$TMP/agent-a/running' | grep -q ." || fail "agent a never started the sleep"
check
wait_for 5 sh -c "pgrep -f -- '$S5' >/dev/null" || fail "no sleep process"
stop_agent a KILL
SLEEP_PIDS=$(pgrep -f -- "$S5" | tr '\n' ' ')
# the killed agent's orphan is ours: make sure it goes when the test ends
for p in $SLEEP_PIDS; do _PIDS+=("$p"); done
start_agent a
wait_enrolled a
assert_eq "$AID" "$A" "agent a's id after kill -9"
wait "$K9"
assert_eq "$?" 1 "keel run whose agent was killed"
K9OUT=$(cat "$TMP/k9.out")
assert_eq "$(printf '%s\n' "$K9OUT" | grep -c .)" 1 "result lines of the interrupted run"
assert_eq "$(jget status "$K9OUT")" interrupted "status after kill -9 and restart"
RUN_K=$(jget run_id "$K9OUT")
assert_contains "$(agent_log a)" "run $RUN_K was interrupted" "agent log after the restart"
# give any duplicate report a chance to arrive, then count
sleep 1.5
req GET "/v1/commands/$(jget command_id "$(sql "$D" "SELECT '{\"command_id\":\"' || command_id || '\"}' FROM command_runs WHERE id='$RUN_K'")")"
assert_status 200 "get the interrupted command"
assert_eq "$(jcount run_id)" 1 "runs of the interrupted command"
assert_eq "$(jget status "$(run_obj "$RUN_K")")" interrupted "stored status of the interrupted run"
req GET '/v1/audit?action=agent:report&limit=1000'
assert_eq "$(printf '%s' "$BODY" | grep -oE "\"detail\":\"run $RUN_K:[^\"]*\"" | wc -l | tr -d ' ')" 1 \
  "agent:report records of the interrupted run"
assert_contains "$BODY" "run $RUN_K: status=interrupted" "audited status of the interrupted run"
assert_eq "$(sql "$D" "SELECT count(*) FROM command_runs WHERE id='$RUN_K'")" 1 "rows of the interrupted run"
# the run is not started again by the restarted agent
sleep 1
assert_eq "$(ls "$TMP/agent-a/running")" "" "running dir after the restart"
NEW=""
for p in $(pgrep -f -- "$S5"); do
  case " $SLEEP_PIDS " in *" $p "*) ;; *) NEW="$NEW $p" ;; esac
done
assert_eq "$NEW" "" "sleep processes started after the restart (the run again)"
# (the orphan of the killed agent: ours, by pid)
for p in $SLEEP_PIDS; do kill "$p" 2>/dev/null; done

# ---- restart keeld under connected agents -------------------------------------------------------
PORT=${URL##*:}
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
sleep 0.5
start_keeld_args "$D" --data "$D" --listen "127.0.0.1:$PORT" --heartbeat 1s
assert_eq "$URL" "http://127.0.0.1:$PORT" "keeld on the same port"
T0=$SECONDS
# an agent is back once it has polled the new keeld: last_seen after its start
RESTARTED=$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)
seen_since() {
  local ls
  ls=$(jget last_seen "$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/agents/$1")")
  [[ "$ls" > "$RESTARTED" ]]
}
for x in "$A" "$B" "$C"; do
  wait_for 15 seen_since "$x" || fail "agent $x did not poll the restarted keeld: $(curl -s -H "Authorization: Bearer $TOKEN" "$URL/v1/agents/$x")"
  assert_eq "$(agent_status "$x")" online "status of $x after the keeld restart"
done
echo "keeld restart: every agent online again after $((SECONDS - T0)) s"
assert_match "$((SECONDS - T0))" '^[0-8]$' "seconds until every agent polls again"
kc run --target '' -- uname -n
assert_eq "$KRC" 0 "keel run on all hosts after the keeld restart: $KOUT $KERR"
assert_eq "$(printf '%s\n' "$KOUT" | grep -c '^=== .*: exit 0')" 3 "hosts that ran after the keeld restart"
for n in a b c; do kill -0 "${AGENT_PIDS[$n]}" || fail "agent $n died during the keeld restart"; done
check

# ---- a forged job is refused by the agent ---------------------------------------------------------
REAL=$(sql "$D" "SELECT job FROM command_runs WHERE agent_id='$A' AND job IS NOT NULL AND status='exited' ORDER BY rowid DESC LIMIT 1")
REALSIG=$(sql "$D" "SELECT sig FROM command_runs WHERE agent_id='$A' AND job IS NOT NULL AND status='exited' ORDER BY rowid DESC LIMIT 1")
REALCMD=$(jget command_id "$REAL")
assert_match "$REALSIG" '^[0-9a-f]{128}$' "a real job signature"
NOW=$(date +%s%3N)
# (1) a job with a made-up signature
F1=run_forgedaaaaaaaa$((RANDOM % 10))$((RANDOM % 10))
JOB1="{\"agent_id\":\"$A\",\"argv\":[\"touch\",\"$TMP/forged1\"],\"command_id\":\"$REALCMD\",\"cwd\":null,\"env\":{},\"issued_at\":$NOW,\"output_cap\":1048576,\"run_id\":\"$F1\",\"shell\":null,\"timeout_ms\":60000,\"user\":null}"
SIG1=$(printf 'ab%.0s' $(seq 64))
# (2) a real job's signature over altered text (argv swapped)
F2=run_forgedbbbbbbbb$((RANDOM % 10))$((RANDOM % 10))
JOB2=$(printf '%s' "$REAL" | sed -e "s|\"argv\":\\[[^]]*\\]|\"argv\":[\"touch\",\"$TMP/forged2\"]|" -e "s|\"run_id\":\"run_[a-z0-9]*\"|\"run_id\":\"$F2\"|")
assert_contains "$JOB2" "forged2" "altered job text"
sql "$D" "INSERT INTO command_runs(id, command_id, agent_id, hostname, status, job, sig) VALUES
  ('$F1', '$REALCMD', '$A', '$HOST', 'pending', '$JOB1', '$SIG1'),
  ('$F2', '$REALCMD', '$A', '$HOST', 'pending', '$JOB2', '$REALSIG')"
forged_done() {
  [ "$(sql "$D" "SELECT count(*) FROM command_runs WHERE id IN ('$F1','$F2') AND status != 'pending'")" = 2 ]
}
wait_for 15 forged_done || fail "the forged jobs were never answered: $(sql "$D" "SELECT id, status FROM command_runs WHERE id IN ('$F1','$F2')")"
check
assert_eq "$(sql "$D" "SELECT status FROM command_runs WHERE id='$F1'")" refused "status of a job with a made-up signature"
assert_eq "$(sql "$D" "SELECT status FROM command_runs WHERE id='$F2'")" refused "status of a job with altered text"
assert_contains "$(sql "$D" "SELECT error FROM command_runs WHERE id='$F1'")" signature "error of the refused job"
[ ! -e "$TMP/forged1" ] && [ ! -e "$TMP/forged2" ] || fail "a forged job ran"
check
assert_contains "$(agent_log a)" "run $F1: refused" "agent log of the forged job"
assert_not_contains "$(cat "$TMP/agent-a/seen")" "$F1" "the agent's seen list"
req GET "/v1/commands/$REALCMD"
assert_eq "$(jget status "$(run_obj "$F1")")" refused "refused run in the API"
# the agent still takes real jobs
kc run --target "id=$A" -- true
assert_eq "$KRC" 0 "keel run after the forged jobs: $KERR"

# ---- keel command show / list -----------------------------------------------------------------------
kc command list --limit 3
assert_eq "$KRC" 0 "keel command list: $KERR"
assert_contains "$KOUT" '["true"]' "newest command in the list"
kc command show "$REALCMD"
assert_eq "$KRC" 0 "keel command show: $KERR"
assert_contains "$KOUT" "refused" "command show lists the refused runs"

# ---- the audit chain ----------------------------------------------------------------------------------
kc audit verify
assert_eq "$KRC" 0 "keel audit verify: $KOUT $KERR"
assert_contains "$KOUT" intact "keel audit verify"
req GET /v1/audit/verify
assert_eq "$(jget intact)" true "audit intact"

for n in a b c; do
  stop_agent "$n"
  assert_eq "$AGENT_RC" 0 "agent $n exit status"
done
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
