#!/usr/bin/env bash
# model_switch.sh — switching operating_model in the organization document
# and re-applying changes the decisions of a running keeld at once: chen
# (application team checkout) runs a command on a checkout prod host under
# decentralized (201), is refused the moment the same file says centralized
# (403, by the centralized preset's prod deny) while pat (platform) is now
# allowed, and is allowed again when it says decentralized; same keeld
# process throughout, no restart.  Each apply's audit record names the
# switch ("operating_model decentralized -> centralized"), and the audit
# chain is intact at the end.
. "$(dirname "$0")/lib.sh" "${1:-}"

POL=$(cd "$(dirname "$0")/../policy" && pwd)
D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s
KPID=$PID
ORG=$TMP/org.yaml
cp "$POL/org-decentralized.yaml" "$ORG"

# set_model MODEL — rewrite operating_model in $ORG (nothing else changes)
set_model() {
  sed -i "s/^operating_model: .*/operating_model: $1/" "$ORG"
  assert_eq "$(grep -c "^operating_model: $1\$" "$ORG")" 1 "operating_model line in org.yaml"
}
# apply_org — keel apply -f $ORG as the admin
apply_org() {
  kc apply -f "$ORG"
  assert_eq "$KRC" 0 "keel apply -f org.yaml: $KOUT $KERR"
}
# run_as TOKEN — POST /v1/commands on the checkout prod host
run_as() { req POST /v1/commands "{\"target\":\"id=$PROD\",\"argv\":[\"true\"]}" "$1"; }
# audit_switch FROM TO — the newest org:write audit record names the switch
audit_switch() {
  local rec
  req GET "/v1/audit?action=org:write&limit=1000"
  assert_status 200 "GET /v1/audit?action=org:write"
  rec=$(printf '%s' "$BODY" | sed 's/},{"seq":/}\n{"seq":/g' | tail -n 1)
  assert_eq "$(jget action "$rec")" "org:write" "audit action"
  assert_eq "$(jget outcome "$rec")" ok "audit outcome"
  assert_eq "$(jget actor "$rec")" "user:admin" "audit actor"
  assert_contains "$(jget detail "$rec")" "operating_model $1 -> $2" "apply audit detail"
}

apply_org
req POST /v1/tokens '{"name":"s","user":"chen"}'
assert_status 201 "token for chen"
CHEN=$(jget token)
req POST /v1/tokens '{"name":"s","user":"pat"}'
assert_status 201 "token for pat"
PAT=$(jget token)
req POST /v1/agent-tokens '{"tags":{"app":"checkout","env":"prod"}}'
assert_status 201 "enrollment token"
start_agent prod --enroll-token "$(jget token)"
wait_enrolled prod
PROD=$AID
audit_switch "(none)" decentralized

# decentralized: checkout runs its own prod; the platform team does not
run_as "$CHEN"
assert_status 201 "decentralized: chen runs on checkout prod"
run_as "$PAT"
assert_error 403 forbidden "decentralized: pat runs on checkout prod"
assert_contains "$BODY" "no statement allows exec:run on app/checkout/env/prod/host/$PROD" "403 of pat"

for round in 1 2; do
  # centralized: the same request from the same keeld is refused at once
  set_model centralized
  apply_org
  run_as "$CHEN"
  assert_error 403 forbidden "round $round: centralized: chen runs on checkout prod"
  assert_contains "$BODY" "denied by preset:centralized:checkout-no-prod-changes-checkout" "403 of chen"
  run_as "$PAT"
  assert_status 201 "round $round: centralized: pat runs on checkout prod"
  req GET /v1/org
  assert_eq "$(jget operating_model)" centralized "GET /v1/org operating_model"
  audit_switch decentralized centralized

  # and back
  set_model decentralized
  apply_org
  run_as "$CHEN"
  assert_status 201 "round $round: decentralized again: chen runs on checkout prod"
  run_as "$PAT"
  assert_error 403 forbidden "round $round: decentralized again: pat runs on checkout prod"
  audit_switch centralized decentralized
done

# re-applying the unchanged file switches nothing and says so
apply_org
req GET "/v1/audit?action=org:write&limit=1000"
assert_not_contains "$(printf '%s' "$BODY" | sed 's/},{"seq":/}\n{"seq":/g' | tail -n 1)" "operating_model" "audit of a no-op apply"
assert_eq "$(printf '%s' "$BODY" | grep -o 'operating_model [a-z()]* -> [a-z]*' | wc -l | tr -d ' ')" 5 "switches in the audit trail"

# one keeld process the whole time
kill -0 "$KPID" 2>/dev/null || fail "keeld (pid $KPID) is gone"
assert_eq "$PID" "$KPID" "keeld pid"
kc audit verify
assert_eq "$KRC" 0 "keel audit verify: $KOUT $KERR"
req GET /v1/audit/verify
assert_status 200 "GET /v1/audit/verify"
assert_eq "$(jget intact)" true "audit chain intact"
finish
