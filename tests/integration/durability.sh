#!/usr/bin/env bash
# durability.sh — anything keeld acknowledges survives kill -9: ~300 concurrent
# user creations, keeld killed with SIGKILL once about a third are answered,
# twice in a row (a crash, a restart, another crash).  After each restart
# every user that got 201 exists, has its user:create audit record with
# outcome ok, and the audit chain is intact; a token whose revocation was
# acknowledged just before the crash stays refused.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
N=300      # creations per round
ANSWERED=$((N / 3))
init_data "$D"
ADMIN=$TOKEN
start_keeld "$D"

# Tokens whose revocation is acknowledged right before each crash, and one
# that is never revoked (so a 401 later means "revoked", not "all broken").
make_user dura operator
KEEP=$UTOKEN
REVOKE_SECRET=()
REVOKE_ID=()
for i in 1 2; do
  req POST /v1/tokens '{"name":"doomed","user":"dura"}'
  assert_status 201 "token $i to revoke"
  REVOKE_SECRET+=("$(jget token)")
  REVOKE_ID+=("$(jget id)")
  req GET /v1/whoami "" "${REVOKE_SECRET[$((i - 1))]}"
  assert_status 200 "token $i works before its revocation"
done

# exists_all FILE — every name in FILE (one a line) answers 200 on
# GET /v1/users/{name}; one curl for all of them.
exists_all() {
  local n cfg=$TMP/get.cfg
  : >"$cfg"
  while read -r n; do
    printf 'url = "%s/v1/users/%s"\noutput = "/dev/null"\n' "$URL" "$n" >>"$cfg"
  done <"$1"
  [ -s "$cfg" ] || return 0
  curl -s --max-time 60 -H "Authorization: Bearer $ADMIN" -w '%{http_code} %{url_effective}\n' \
    -K "$cfg" >"$TMP/get.out" || fail "curl for the GETs failed"
  assert_eq "$(wc -l <"$TMP/get.out" | tr -d ' ')" "$(wc -l <"$1" | tr -d ' ')" "GETs answered"
  n=$(grep -v '^200 ' "$TMP/get.out" | head -n 5)
  assert_eq "$n" "" "acknowledged users missing after the crash (status url)"
}

# audit_ok_targets FILE — the targets of every user:create record with
# outcome ok, one a line (paginated GET /v1/audit).
audit_ok_targets() {
  local cur="" page=0
  : >"$1"
  while :; do
    req GET "/v1/audit?action=user:create&limit=1000${cur:+&cursor=$cur}"
    assert_status 200 "audit page $page"
    printf '%s' "$BODY" | grep -oE '"action":"user:create","target":"[^"]*","outcome":"ok"' |
      sed -E 's/.*"target":"([^"]*)".*/\1/' >>"$1"
    cur=$(jget next_cursor)
    [ "$cur" = null ] && break
    [ -n "$cur" ] || fail "audit page without next_cursor: $(printf '%.300s' "$BODY")"
    page=$((page + 1))
    [ "$page" -lt 50 ] || fail "audit pagination does not end"
  done
}

# verify_round R — after the restart: round R's acknowledged users exist,
# are audited with outcome ok, and the chain is intact.
verify_round() {
  local r=$1 res=$TMP/res.$1 ok=$TMP/ok.$1 missing
  awk '$2 == "201" {print $1}' "$res" | sort >"$ok"
  exists_all "$ok"
  audit_ok_targets "$TMP/audited"
  sed 's|^user/||' "$TMP/audited" | sort -u >"$TMP/audited.names"
  missing=$(comm -23 "$ok" "$TMP/audited.names" | head -n 5)
  assert_eq "$missing" "" "acknowledged users without a user:create ok audit record"
  # The change and its audit record commit together: no user of the round
  # exists without its record, and no record without its user.
  sql "$D" "SELECT name FROM users WHERE name LIKE 'r$r-%' ORDER BY name" >"$TMP/db.names"
  grep "^r$r-" "$TMP/audited.names" | sort >"$TMP/aud.r"
  sort "$TMP/db.names" >"$TMP/db.sorted"
  assert_eq "$(diff "$TMP/db.sorted" "$TMP/aud.r" | head -n 5)" "" \
    "round $r: users in the database vs their user:create ok records"
  VOUT=$("$KEEL" --server "$URL" --token "$ADMIN" audit verify 2>&1)
  assert_eq "$?" 0 "audit verify after crash $r (exit status; output: $VOUT)"
  assert_match "$VOUT" '^intact: [0-9]+ records$' "verify output after crash $r"
}

# crash_round R — N concurrent creations r<R>-1..N; once a third are
# answered, revoke token R (acknowledged) and kill -9 keeld at once.
crash_round() {
  local r=$1 res=$TMP/res.$1 xp i nres
  export URL TOKEN
  seq 1 "$N" | xargs -P 16 -I{} sh -c \
    'c=$(curl -s -o /dev/null -w "%{http_code}" --max-time 20 -H "Authorization: Bearer $TOKEN" --data-binary "{\"name\":\"r'"$r"'-{}\"}" "$URL/v1/users"); echo "r'"$r"'-{} $c"' \
    >"$res" 2>/dev/null &
  xp=$!
  for i in $(seq 1 2000); do
    nres=$(wc -l <"$res")
    [ "$nres" -ge "$ANSWERED" ] && break
    kill -0 "$xp" 2>/dev/null || break
    sleep 0.01
  done
  [ "$nres" -ge "$ANSWERED" ] || fail "round $r: only $nres of $N answered before the crash"
  req DELETE "/v1/tokens/${REVOKE_ID[$((r - 1))]}"
  kill -9 "$PID" || fail "keeld (pid $PID) was not running at the crash"
  { wait "$PID"; } 2>/dev/null # no "Killed" job notice
  PID=""
  assert_status 200 "round $r: revocation acknowledged before the crash"
  assert_eq "$(jget status)" revoked "round $r: revocation answer"
  wait "$xp"
  assert_eq "$(wc -l <"$res" | tr -d ' ')" "$N" "round $r: every request reported"
  local bad
  bad=$(awk '$2 != "201" && $2 != "000"' "$res" | head -n 5)
  assert_eq "$bad" "" "round $r: answers other than 201 or cut off by the crash"
  local n201
  n201=$(awk '$2 == "201"' "$res" | wc -l)
  [ "$n201" -ge "$ANSWERED" ] && [ "$n201" -lt "$N" ] ||
    fail "round $r: want the crash mid-burst, got $n201 of $N acknowledged"
  check
  echo "round $r: $n201 of $N acknowledged before kill -9"
}

for r in 1 2; do
  crash_round "$r"
  start_keeld "$D"
  for k in $(seq 1 "$r"); do verify_round "$k"; done
  for k in $(seq 1 "$r"); do
    req GET /v1/whoami "" "${REVOKE_SECRET[$((k - 1))]}"
    assert_error 401 unauthorized "token revoked before crash $k, after crash $r"
  done
  req GET /v1/whoami "" "$KEEP"
  assert_status 200 "unrevoked token after crash $r"
  req GET '/v1/tokens?user=dura'
  assert_status 200 "dura's tokens after crash $r"
  ST=$(printf '%s' "$BODY" | grep -oE "\"id\":\"${REVOKE_ID[$((r - 1))]}\"[^}]*" | grep -oE '"status":"[a-z]+"')
  assert_eq "$ST" '"status":"revoked"' "status of the token revoked before crash $r"
  req GET '/v1/audit?action=token:revoke&limit=1000'
  assert_match "$BODY" "\"action\":\"token:revoke\",\"target\":\"[^\"]*\",\"outcome\":\"ok\",\"status\":200" \
    "token:revoke ok record after crash $r"
  assert_eq "$(printf '%s' "$BODY" | grep -oE '"action":"token:revoke","target":"[^"]*","outcome":"ok"' | wc -l | tr -d ' ')" \
    "$r" "token:revoke ok records after crash $r"
done

stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status after the crashes"
finish
