#!/usr/bin/env bash
# runbooks.sh — runbook documents go through keel apply like the
# organization: validated with file:line:col errors, idempotent, dry run,
# judged as runbook:write on their owner's path, listed per permission.
. "$(dirname "$0")/lib.sh" "${1:-}"
EX=$(cd "$(dirname "$0")/../../examples" && pwd)

D=$TMP/data
init_data "$D"
start_keeld "$D"
export KEEL_SERVER=$URL KEEL_TOKEN=$TOKEN
kc apply -f "$EX/org.yaml"
assert_eq "$KRC" 0 "apply the example organization"
for f in "$EX"/runbooks/*.yaml; do
  kc apply -f "$f" --dry-run
  assert_eq "$KRC" 0 "dry run $f"
  assert_contains "$KOUT" "dry run: 1 created" "dry run of $(basename "$f") would create it"
done
req GET /v1/runbooks
assert_status 200 "list after dry runs"
assert_eq "$(jcount name)" 0 "dry runs stored nothing"
for f in "$EX"/runbooks/*.yaml; do
  kc apply -f "$f"
  assert_eq "$KRC" 0 "apply $f"
  assert_contains "$KOUT" "1 created" "$(basename "$f") created"
  kc apply -f "$f"
  assert_contains "$KOUT" "no changes" "$(basename "$f") applied again changes nothing"
done
kc runbook list
assert_contains "$KOUT" "rolling-restart" "listed"
kc runbook show rolling-restart --json
assert_contains "$KOUT" '"targets"' "show has the document"

# a change is an update, and the audit says so
sed 's/^description: .*/description: changed/' "$EX/runbooks/diagnostics.yaml" >"$TMP/diag.yaml"
kc apply -f "$TMP/diag.yaml"
assert_contains "$KOUT" "1 updated" "changed description updates"
req GET "/v1/audit?action=org:write&limit=1000"
assert_contains "$BODY" "update runbook/diagnostics" "the update is audited"

# errors name file, line and column; nothing is stored
printf 'kind: Runbook\nname: bad\nowner: {team: platform}\ntargets: ""\nsteps:\n  - name: a\n    comand: {argv: [true]}\n' >"$TMP/bad.yaml"
kc apply -f "$TMP/bad.yaml"
assert_eq "$KRC" 1 "a bad runbook is refused"
assert_contains "$KERR" "bad.yaml:7:" "the error names the line"
assert_contains "$KERR" "comand" "and the field"
printf 'kind: Runbook\nname: hostile\nowner: {team: platform}\ntargets: ""\nsteps:\n  - name: a\n    command: {argv: [echo, "{{ params.nope }}"]}\n' >"$TMP/bad2.yaml"
kc apply -f "$TMP/bad2.yaml"
assert_eq "$KRC" 1 "an unknown parameter in a template is refused"
assert_contains "$KERR" "nope" "and named"

# policy: a checkout member may write a checkout runbook, not a platform one
req POST /v1/tokens '{"user":"chen"}'
CHEN=$(jget token)
TOKEN=$CHEN kc apply -f "$EX/runbooks/restart-service.yaml"
assert_eq "$KRC" 1 "chen may not write the platform's runbook"
assert_contains "$KERR" "runbook:write on team/platform/runbook/restart-service" "the 403 names action and path"
sed 's/^description: .*/description: chen was here/' "$EX/runbooks/rolling-restart.yaml" >"$TMP/rr.yaml"
TOKEN=$CHEN kc apply -f "$TMP/rr.yaml"
assert_eq "$KRC" 0 "chen may update checkout's runbook"
TOKEN=$CHEN kc runbook list --json
assert_contains "$KOUT" "rolling-restart" "chen sees checkout's runbook"
assert_not_contains "$KOUT" "clean-disk" "chen does not see the platform's"
req DELETE /v1/runbooks/diagnostics
assert_status 200 "delete"
req GET /v1/runbooks/diagnostics
assert_status 404 "gone"
kc audit verify
assert_eq "$KRC" 0 "audit intact"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
