#!/usr/bin/env bash
# auth_sweep.sh — every /v1 route and method from `keeld routes` answers 401
# without a token, with a garbage token and with a revoked token; the public
# routes answer 200 without one.  A route added to the table is covered here
# automatically.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D"
req POST /v1/tokens '{"name":"doomed"}'
assert_status 201 "create a token to revoke"
REVOKED=$(jget token)
req DELETE "/v1/tokens/$(jget id)"
assert_status 200 "revoke it"

"$KEELD" routes >"$TMP/routes" || fail "keeld routes"
NV1=0
NPUB=0
while read -r method pattern action flags; do
  [ -n "$method" ] || continue
  path=$(printf '%s' "$pattern" | sed 's/{[^}]*}/x1/g')
  body=""
  case "$method" in POST | PATCH | PUT) body='{}' ;; esac
  if [ "${flags:-}" = public ]; then
    req "$method" "$path" "" ""
    assert_status 200 "$method $pattern without a token"
    NPUB=$((NPUB + 1))
    continue
  fi
  case "$pattern" in /v1/* | /api/v1/*) ;; *) fail "route $pattern is neither public nor under /v1 or /api/v1" ;; esac
  NV1=$((NV1 + 1))
  for tok in "" "garbage" "keel_tok_nothere_aaaaaaaaaaaaaaaaaaaaaaaa" "$REVOKED"; do
    req "$method" "$path" "$body" "$tok"
    case "$pattern" in
      /api/v1/*) # Prometheus' API answers in Prometheus' error shape
        assert_status 401 "$method $pattern with token '${tok:0:12}...'"
        assert_match "$BODY" '^\{"status":"error","errorType":"unauthorized","error":"[^"]+"\}$' "$method $pattern: Prometheus error shape" ;;
      *) assert_error 401 unauthorized "$method $pattern with token '${tok:0:12}...'" ;;
    esac
  done
done <"$TMP/routes"
[ "$NV1" -ge 10 ] || fail "only $NV1 /v1 routes in 'keeld routes'"
check
assert_eq "$NPUB" 3 "public routes"
# the admin token still works and every refusal is on the record
req GET "/v1/audit?limit=1000"
assert_status 200 "audit"
N=$(printf '%s' "$BODY" | grep -oE '"outcome":"denied","status":401' | wc -l)
assert_eq "$N" "$((NV1 * 4))" "recorded 401s"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
