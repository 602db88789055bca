#!/usr/bin/env bash
# authz_sweep.sh — no /v1 route is reachable without an authorization
# decision.  A user bound by a guardrail that denies every action on every
# resource calls every user-facing /v1 route from `keeld routes`: each
# answers 403 naming that guardrail and is audited as denied — except what
# identity alone allows (whoami, one's own tokens).  The agents' routes
# authenticate differently and are judged under role agent/enroll; they
# are covered by agents.sh.  A route added to the table is swept here
# automatically.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D"
cat >"$TMP/org.yaml" <<'DOC'
kind: Organization
name: sweep
operating_model: ccoe
base: decentralized
users:
  - {name: locked}
teams:
  - {name: jail, kind: application, members: [locked]}
guardrails:
  - id: deny-everything
    principals: [team:jail]
    actions: ["*"]
    resources: ["**"]
    reason: the sweep's locked user may do nothing
DOC
req POST "/v1/apply?file=org.yaml" "@$TMP/org.yaml"
assert_status 200 "apply the sweep organization"
req POST /v1/tokens '{"name":"sweep","user":"locked"}'
assert_status 201 "token for locked"
LOCKED=$(jget token)
LOCKED_TOK=$(jget id)
req POST /v1/tokens '{"name":"other"}'
ADMIN_TOK=$(jget id)

"$KEELD" routes >"$TMP/routes" || fail "keeld routes"
N=0
while read -r method pattern action flags; do
  [ -n "$method" ] || continue
  case "$pattern" in /v1/agent/*) continue ;; /v1/*) ;; *) continue ;; esac
  path=$(printf '%s' "$pattern" | sed "s/{id}/x1/g")
  case "$pattern" in
    /v1/users/*) path=/v1/users/admin ;;
    /v1/tokens/*) path=/v1/tokens/$ADMIN_TOK ;;
  esac
  case "$pattern" in /v1/policy/explain) path="$path?action=exec:run&resource=org" ;; esac
  body=""
  case "$method" in
    POST | PATCH | PUT) body='{}' ;;
  esac
  case "$method $pattern" in
    "POST /v1/users") body='{"name":"new-user"}' ;;
    "PATCH /v1/users/{id}") body='{"version":1,"role":"admin"}' ;;
    "POST /v1/apply") body="@$TMP/org.yaml" ;;
    "POST /v1/commands") body='{"target":"","argv":["true"]}' ;;
    "POST /v1/executions") body='{"runbook":"x"}' ;;
    "PATCH /v1/agents/{id}") body='{"version":1,"tags":{"app":"a","env":"dev"}}' ;;
    "POST /v1/agent-tokens") body='{"tags":{"app":"a","env":"dev"}}' ;;
    "POST /v1/tokens") body='{"user":"admin"}' ;;
  esac
  req "$method" "$path" "$body" "$LOCKED"
  case "$action" in
    whoami:read)
      assert_status 200 "$method $pattern: identity alone allows it" ;;
    token:read)
      # without ?user= a non-admin lists its own tokens: identity, not policy
      assert_status 200 "$method $pattern: own tokens"
      req "$method" "$path?user=admin" "" "$LOCKED"
      assert_error 403 forbidden "$method $pattern?user=admin as the locked user"
      assert_contains "$BODY" "deny-everything" "$method $pattern?user=admin: names the guardrail"
      N=$((N + 1)) ;;
    *)
      assert_error 403 forbidden "$method $pattern as the locked user"
      # the guardrail, or for the document itself the ccoe preset's explicit
      # deny, which is judged before guardrails
      case "$BODY" in
        *deny-everything* | *only-ccoe-writes-org*) check ;;
        *) fail "$method $pattern: the 403 names no deciding deny: $BODY" ;;
      esac
      N=$((N + 1)) ;;
  esac
done <"$TMP/routes"
[ "$N" -ge 15 ] || fail "only $N routes swept"
# one's own tokens are one's own business, guardrail or not
req GET "/v1/tokens" "" "$LOCKED"
assert_status 200 "list own tokens"
req DELETE "/v1/tokens/$LOCKED_TOK" "" "$LOCKED"
assert_status 200 "revoke own token"
# every refusal is on the record
req GET "/v1/audit?limit=1000&actor=user:locked"
assert_status 200 "audit"
DENIED=$(printf '%s' "$BODY" | grep -oE '"outcome":"denied","status":403' | wc -l)
assert_eq "$DENIED" "$N" "recorded 403s"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
