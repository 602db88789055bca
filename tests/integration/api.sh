#!/usr/bin/env bash
# api.sh — users, tokens and whoami end to end over raw HTTP, the error
# contract (400/401/403/404/405/409/413), denials on the record, secrets
# never stored, init refusing an existing data dir, file modes.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
ADMIN=$TOKEN
assert_file_mode "$D/admin.token" 600
assert_file_mode "$D/server.key" 600
assert_eq "$(head -n 1 "$D/admin.token")" "$ADMIN" "admin.token holds the printed token"
start_keeld "$D"

# ---- whoami -------------------------------------------------------------------------
req GET /v1/whoami
assert_status 200 whoami
assert_contains "$BODY" '"name":"admin"'
assert_contains "$BODY" '"role":"admin"'
assert_contains "$BODY" '"kind":"token"'
assert_not_contains "$BODY" "$ADMIN" "whoami answer"
RID=$(header X-Request-Id)
assert_ne "$RID" "" "X-Request-Id"

# ---- users --------------------------------------------------------------------------
req POST /v1/users '{"name":"alice","role":"operator","display_name":"Alice","email":"alice@example.com"}'
assert_status 201 "create alice"
assert_eq "$(jget kind)" user
assert_eq "$(jget name)" alice
assert_eq "$(jget role)" operator
assert_eq "$(jget display_name)" Alice
assert_eq "$(jget email)" alice@example.com
assert_eq "$(jget version)" 1
assert_eq "$(jget disabled)" false
assert_match "$(jget created_at)" '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{3}Z$' created_at
ALICE_ID=$(jget id)
assert_match "$ALICE_ID" '^usr_' "user id"
CREATE_RID=$(header X-Request-Id)

req POST /v1/users '{"name":"bob"}'
assert_status 201 "create bob"
assert_eq "$(jget role)" viewer "default role"

req POST /v1/users '{"name":"alice"}'
assert_error 409 conflict "name taken"

req GET "/v1/users/$ALICE_ID"
assert_status 200 "get by id"
assert_eq "$(jget name)" alice
req GET /v1/users/alice
assert_status 200 "get by name"
assert_eq "$(jget id)" "$ALICE_ID"
req GET /v1/users/nobody
assert_error 404 not_found "unknown user"

req GET /v1/users
assert_status 200 "list users"
assert_contains "$BODY" '"items":['
assert_contains "$BODY" '"name":"alice"'
assert_contains "$BODY" '"name":"bob"'
assert_contains "$BODY" '"next_cursor":null'
req GET '/v1/users?limit=1'
assert_status 200 "list limit 1"
assert_eq "$(jcount kind)" 1 "items on a page of 1"
CUR=$(jget next_cursor)
assert_ne "$CUR" null "next_cursor of a page of 1"
req GET "/v1/users?limit=1&cursor=$CUR"
assert_status 200 "second page"
assert_eq "$(jcount kind)" 1
req GET '/v1/users?limit=0'
assert_error 400 bad_request "limit 0"
req GET '/v1/users?bogus=1'
assert_error 400 bad_request "unknown query parameter"
assert_contains "$BODY" bogus

req PATCH /v1/users/alice '{"version":1,"display_name":"Alice A.","disabled":false}'
assert_status 200 "patch alice"
assert_eq "$(jget version)" 2
assert_eq "$(jget display_name)" "Alice A."
req PATCH /v1/users/alice '{"version":1,"role":"viewer"}'
assert_error 409 conflict "stale version"
req GET /v1/users/alice
assert_eq "$(jget role)" operator "stale patch changed nothing"
assert_eq "$(jget version)" 2
req PATCH /v1/users/alice '{"role":"viewer"}'
assert_error 400 bad_request "patch without version"
assert_contains "$BODY" version
req PATCH /v1/users/alice '{"version":2,"role":"emperor"}'
assert_error 400 bad_request "invalid role"
assert_contains "$BODY" role

# ---- malformed bodies -----------------------------------------------------------------
req POST /v1/users '{"name":"carol",'
assert_error 400 bad_request "malformed JSON"
assert_match "$BODY" 'line [0-9]+' "malformed JSON message (line)"
assert_match "$BODY" 'column [0-9]+' "malformed JSON message (column)"
assert_match "$BODY" 'byte [0-9]+' "malformed JSON message (byte)"
req POST /v1/users $'{"name":\n  "carol" "x"}'
assert_error 400 bad_request "malformed JSON on line 2"
assert_contains "$BODY" "line 2" "position of an error on line 2"
req POST /v1/users '{"name":"carol","shoe_size":42}'
assert_error 400 bad_request "unknown field"
assert_contains "$BODY" shoe_size
req POST /v1/users '{"name":"carol","role":7}'
assert_error 400 bad_request "wrong type"
assert_contains "$BODY" "'role'"
req POST /v1/users '{"name":"Not Valid!"}'
assert_error 400 bad_request "invalid name"
assert_contains "$BODY" name
req POST /v1/users '[1,2]'
assert_error 400 bad_request "array body"
req POST /v1/users ''
assert_error 400 bad_request "missing body"
req GET /v1/whoami '{"x":1}'
assert_error 400 bad_request "body on a GET"
req GET /v1/users/carol
assert_error 404 not_found "no carol after the failed creations"

# ---- routes -----------------------------------------------------------------------------
req GET /v1/nope
assert_error 404 not_found "unknown /v1 path"
req GET /nope "" ""
assert_error 404 not_found "unknown path"
req PUT /v1/users '{"name":"x"}'
assert_error 405 method_not_allowed "PUT /v1/users"
ALLOW=$(header Allow)
assert_contains "$ALLOW" GET "Allow header"
assert_contains "$ALLOW" POST "Allow header"
req DELETE /v1/users/alice
assert_error 405 method_not_allowed "DELETE /v1/users/{id}"
assert_contains "$(header Allow)" PATCH "Allow header"
req POST /healthz "" ""
assert_error 405 method_not_allowed "POST /healthz"
assert_eq "$(header Allow)" GET "Allow of /healthz"

# ---- body limit at the default (1 MiB) --------------------------------------------------
head -c $((1024 * 1024 + 100)) /dev/zero | tr '\0' ' ' >"$TMP/big.json"
printf '{"name":"big"}' >>"$TMP/big.json"
req POST /v1/users "@$TMP/big.json"
assert_error 413 payload_too_large "body over 1 MiB"
req GET /v1/users/big
assert_status 404 "no user from the oversized body"
# just under the limit is parsed (and refused for its content, not its size)
head -c $((1024 * 1024 - 100)) /dev/zero | tr '\0' ' ' >"$TMP/ok.json"
printf '{"name":"big"}' >>"$TMP/ok.json"
req POST /v1/users "@$TMP/ok.json"
assert_status 201 "body just under 1 MiB"

# ---- tokens -------------------------------------------------------------------------------
req POST /v1/tokens '{"name":"ci","user":"alice"}'
assert_status 201 "token for alice"
assert_eq "$(jget status)" active
assert_eq "$(jget user)" alice
assert_eq "$(jget expires_at)" null
ALICE_TOK=$(jget token)
ALICE_TOK_ID=$(jget id)
assert_match "$ALICE_TOK_ID" '^tok_' "token id"
assert_ne "$ALICE_TOK" "" "token secret"
req GET /v1/whoami "" "$ALICE_TOK"
assert_status 200 "whoami as alice"
assert_contains "$BODY" '"name":"alice"'
assert_contains "$BODY" "\"id\":\"$ALICE_TOK_ID\""

req GET /v1/tokens
assert_status 200 "list tokens (admin)"
assert_contains "$BODY" "$ALICE_TOK_ID"
assert_not_contains "$BODY" "$ALICE_TOK" "token list"
assert_not_contains "$BODY" '"token":"' "token list"
req GET '/v1/tokens?user=alice'
assert_status 200 "tokens of alice"
assert_contains "$BODY" "$ALICE_TOK_ID"
assert_not_contains "$BODY" '"user":"admin"' "filtered token list"

# a user's own token, made by the user
req POST /v1/tokens '{"name":"mine"}' "$ALICE_TOK"
assert_status 201 "alice creates her own token"
ALICE_TOK2=$(jget token)
ALICE_TOK2_ID=$(jget id)
req GET /v1/tokens "" "$ALICE_TOK"
assert_status 200 "alice lists her tokens"
assert_not_contains "$BODY" '"user":"admin"' "alice's token list"

# ttl: works at once, 401 after it passes
req POST /v1/tokens '{"name":"short","user":"alice","ttl":"1s"}'
assert_status 201 "token with ttl 1s"
assert_ne "$(jget expires_at)" null expires_at
SHORT=$(jget token)
SHORT_ID=$(jget id)
req GET /v1/whoami "" "$SHORT"
assert_status 200 "ttl token before expiry"
req POST /v1/tokens '{"name":"bad","ttl":"soon"}'
assert_error 400 bad_request "bad ttl"
assert_contains "$BODY" ttl

# revoke: 401 at once
req DELETE "/v1/tokens/$ALICE_TOK2_ID"
assert_status 200 "revoke"
assert_eq "$(jget status)" revoked
assert_ne "$(jget revoked_at)" null revoked_at
req GET /v1/whoami "" "$ALICE_TOK2"
assert_error 401 unauthorized "revoked token"
req DELETE "/v1/tokens/tok_doesnotexist"
assert_error 404 not_found "revoke unknown token"

# ---- 403 for a viewer ----------------------------------------------------------------------
make_user vic viewer
VIC=$UTOKEN
req POST /v1/users '{"name":"mallory","role":"admin"}' "$VIC"
assert_error 403 forbidden "viewer creates a user"
FORBID_MSG=$(jget message)
assert_contains "$FORBID_MSG" viewer "403 reason names the role"
req PATCH /v1/users/vic '{"version":1,"role":"admin"}' "$VIC"
assert_error 403 forbidden "viewer promotes itself"
req GET /v1/audit "" "$VIC"
assert_error 403 forbidden "viewer reads the audit log"
req DELETE "/v1/tokens/$ALICE_TOK_ID" "" "$VIC"
assert_status 403 "viewer revokes alice's token"
req POST /v1/tokens '{"name":"x","user":"alice"}' "$VIC"
assert_error 403 forbidden "viewer makes a token for alice"
req GET /v1/users/mallory
assert_status 404 "no mallory"
req GET /v1/users "" "$VIC"
assert_status 200 "viewer reads users"

# the 1 s token has expired by now (at least 1 s has passed? make sure)
sleep 1.1
req GET /v1/whoami "" "$SHORT"
assert_error 401 unauthorized "expired token"
req GET "/v1/tokens?user=alice"
assert_contains "$BODY" "\"id\":\"$SHORT_ID\"" "expired token listed"
# its status is "expired"
ST=$(printf '%s' "$BODY" | grep -oE "\"id\":\"$SHORT_ID\"[^}]*" | grep -oE '"status":"[a-z]+"')
assert_eq "$ST" '"status":"expired"' "status of the expired token"

# ---- 401 variants ---------------------------------------------------------------------------
req GET /v1/whoami "" ""
assert_error 401 unauthorized "no token"
req GET /v1/whoami "" "garbage"
assert_error 401 unauthorized "garbage token"
# change the last character (to one it is not: the secret is random base32)
LAST=${ADMIN: -1}
if [ "$LAST" = x ]; then ALT=y; else ALT=x; fi
req GET /v1/whoami "" "${ADMIN%?}$ALT"
assert_error 401 unauthorized "altered token"
STATUS=$(curl -s -o "$TMP/b" -w '%{http_code}' -H "Authorization: Basic $ADMIN" "$URL/v1/whoami")
assert_eq "$STATUS" 401 "Basic instead of Bearer"
# a disabled user's tokens stop working
req GET /v1/users/vic
req PATCH /v1/users/vic "{\"version\":$(jget version),\"disabled\":true}"
assert_status 200 "disable vic"
req GET /v1/whoami "" "$VIC"
assert_error 401 unauthorized "disabled user's token"

# ---- every denial is on the record -------------------------------------------------------------
req GET '/v1/audit?action=user:create&limit=1000'
assert_status 200 "audit by action"
assert_match "$BODY" '"action":"user:create","target":"[^"]*","outcome":"denied","status":403' "403 on POST /v1/users recorded"
assert_contains "$BODY" "$FORBID_MSG" "recorded 403 reason"
assert_contains "$BODY" "\"request_id\":\"$CREATE_RID\"" "request id of alice's creation in the audit"
assert_not_contains "$BODY" '"action":"whoami:read"' "action filter"
req GET '/v1/audit?action=whoami:read&limit=1000'
assert_status 200 "audit whoami"
N401=$(printf '%s' "$BODY" | grep -oE '"outcome":"denied","status":401' | wc -l)
[ "$N401" -ge 7 ] || fail "want >= 7 recorded 401s on whoami, got $N401: $BODY"
check
req GET '/v1/audit?action=user:update&limit=1000'
assert_match "$BODY" '"outcome":"denied","status":403' "403 on PATCH recorded"
assert_match "$BODY" '"outcome":"failed","status":409' "409 on PATCH recorded"
req GET '/v1/audit?action=audit:read&limit=1000'
assert_match "$BODY" '"outcome":"denied","status":403' "403 on audit read recorded"
req GET '/v1/audit?action=token:create&limit=1000'
assert_match "$BODY" '"outcome":"denied","status":403' "403 on token create recorded"
req GET "/v1/audit?actor=user:vic&limit=1000"
assert_status 200 "audit by actor"
assert_contains "$BODY" '"actor":"user:vic"'
assert_not_contains "$BODY" '"actor":"user:admin"' "actor filter"
req GET '/v1/audit?since=2000-01-01T00:00:00Z&limit=2'
assert_status 200 "audit since"
req GET '/v1/audit?since=yesterday'
assert_error 400 bad_request "bad since"
req GET /v1/audit/verify
assert_status 200 verify
assert_eq "$(jget intact)" true "audit intact"

# ---- small --body-limit -----------------------------------------------------------------------
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
start_keeld "$D" --body-limit 200
req POST /v1/users '{"name":"small","display_name":"ok"}'
assert_status 201 "body under --body-limit 200"
BIGGER="{\"name\":\"toolarge\",\"display_name\":\"$(head -c 300 /dev/zero | tr '\0' x)\"}"
req POST /v1/users "$BIGGER"
assert_error 413 payload_too_large "body over --body-limit 200"
assert_contains "$BODY" 200 "413 message names the limit"
req GET /v1/users/toolarge
assert_status 404 "nothing created from the oversized body"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"

# ---- secrets never stored ------------------------------------------------------------------------
sqlite3 "$D/keel.db" .dump >"$TMP/dump.sql" || fail "sqlite3 .dump"
for t in "$ADMIN" "$ALICE_TOK" "$ALICE_TOK2" "$SHORT" "$VIC"; do
  grep -qF -- "$t" "$TMP/dump.sql" && fail "a token secret is in the database dump"
  # nor its secret part alone
  grep -qF -- "${t##*_}" "$TMP/dump.sql" && fail "a token's secret part is in the database dump"
  check
done
# and nowhere else in the data dir except admin.token
for f in "$D"/*; do
  case "$f" in */admin.token) continue ;; esac
  grep -qaF -- "${ALICE_TOK##*_}" "$f" && fail "alice's token secret is in $f"
done
check
NT=$(sqlite3 "$D/keel.db" 'SELECT count(*) FROM tokens')
[ "$NT" -ge 5 ] || fail "want >= 5 tokens, got $NT"
check
NH=$(sqlite3 "$D/keel.db" "SELECT count(*) FROM tokens WHERE length(secret_hash) >= 32 AND secret_hash NOT GLOB '*[^0-9a-zA-Z\$+/=._-]*'")
assert_eq "$NH" "$NT" "every token row has a hash"

# ---- init refuses an existing data dir -------------------------------------------------------------
sum_dir() { (cd "$D" && find . -type f | sort | xargs sha256sum && stat -c '%n %a %s %Y' ./*); }
BEFORE=$(sum_dir)
"$KEELD" init --data "$D" >"$TMP/init2.out" 2>"$TMP/init2.err"
RC=$?
assert_ne "$RC" 0 "init on an existing data dir"
assert_contains "$(cat "$TMP/init2.err")" "refusing" "init refusal message"
assert_eq "$(cat "$TMP/init2.out")" "" "init refusal prints no token"
assert_eq "$(sum_dir)" "$BEFORE" "data dir after a refused init"
# the admin token still works
start_keeld "$D"
req GET /v1/whoami "" "$ADMIN"
assert_status 200 "admin token after the refused init"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
