#!/usr/bin/env bash
# shutdown.sh — SIGTERM with requests in flight: exit 0, "stopped cleanly",
# every request answered or refused at connect (never cut off or 5xx), every
# acknowledged user on disk afterwards, audit chain intact.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
start_keeld "$D"
export URL TOKEN
seq 1 60 | xargs -P 16 -I{} sh -c \
  'c=$(curl -s -o /dev/null -w "%{http_code}" --max-time 20 -H "Authorization: Bearer $TOKEN" --data-binary "{\"name\":\"s{}\"}" "$URL/v1/users"); echo "{} $c"' \
  >"$TMP/codes" 2>/dev/null &
XP=$!
sleep 0.3
stop_keeld TERM
wait "$XP"
assert_eq "$KEELD_RC" 0 "keeld exit status after SIGTERM in flight"
assert_contains "$(cat "$KEELD_LOG")" "stopped cleanly" "keeld log"
assert_eq "$(wc -l <"$TMP/codes" | tr -d ' ')" 60 "every request reported"
BAD=$(awk '$2 != "201" && $2 != "000"' "$TMP/codes")
assert_eq "$BAD" "" "answers other than 201 or refused-at-connect"
OK=$(awk '$2 == "201" {print $1}' "$TMP/codes")
[ -n "$OK" ] || fail "no request was answered before the stop"
check
start_keeld "$D"
for n in $OK; do
  req GET "/v1/users/s$n"
  assert_status 200 "acknowledged user s$n after restart"
done
VOUT=$("$KEEL" --server "$URL" --token "$TOKEN" audit verify 2>&1)
assert_eq "$?" 0 "audit verify after the shutdown"
assert_match "$VOUT" '^intact: [0-9]+ records$' "verify output"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
