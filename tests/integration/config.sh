#!/usr/bin/env bash
# config.sh — keeld --config FILE sets every flag; bad keys and values are
# clear errors with a non-zero exit.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
cat >"$TMP/keeld.conf" <<CONF
# every option of keeld serve
data = $D
listen = 127.0.0.1:0
body-limit = 300
checkpoint-records = 5
checkpoint-interval = 1h
log-level = warn
shutdown-grace = 2s
CONF
start_keeld_args "$D" --config "$TMP/keeld.conf"
assert_match "$URL" '^http://127\.0\.0\.1:[0-9]+$' "listen from the config file"
req POST /v1/users '{"name":"c1"}'
assert_status 201 "small body"
req POST /v1/users "{\"name\":\"c2\"}$(printf "%400s" "")"
assert_error 413 payload_too_large "body-limit = 300 from the config file"
for i in 3 4 5 6 7 8 9 10 11 12; do req POST /v1/users "{\"name\":\"c$i\"}"; done
assert_status 201 "more users"
sleep 0.3
NCP=$(sqlite3 "$D/keel.db" 'SELECT count(*) FROM audit_checkpoints')
[ "$NCP" -ge 3 ] || fail "checkpoint-records = 5: want >= 3 checkpoints, got $NCP"
check
assert_not_contains "$(cat "$KEELD_LOG")" "[info]" "log-level = warn from the file"
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
# flags win over the file
start_keeld_args "$D" --config "$TMP/keeld.conf" --body-limit 1M --log-level info
req POST /v1/users "{\"name\":\"c2\"}$(printf "%400s" "")"
assert_status 201 "--body-limit flag over the file"
stop_keeld
assert_contains "$(cat "$KEELD_LOG")" "[info]" "--log-level info over the file"

bad() { # WHAT CONFIG-LINE NEEDLE
  printf 'data = %s\nlisten = 127.0.0.1:0\n%s\n' "$D" "$2" >"$TMP/bad.conf"
  timeout 10 "$KEELD" --config "$TMP/bad.conf" >"$TMP/bad.out" 2>&1
  local rc=$?
  assert_ne "$rc" 0 "exit status with $1"
  assert_ne "$rc" 124 "keeld must refuse $1, not serve"
  assert_contains "$(cat "$TMP/bad.out")" "$3" "error for $1"
}
bad "an unknown key" "colour = blue" "unknown option 'colour'"
bad "a line without =" "listen" "bad.conf:3"
bad "a bad size" "body-limit = lots" "body-limit"
bad "a bad duration" "shutdown-grace = forever" "shutdown-grace"
bad "a bad level" "log-level = chatty" "log-level"
timeout 10 "$KEELD" --config "$TMP/nonexistent.conf" >"$TMP/bad.out" 2>&1
assert_ne "$?" 0 "missing config file"
assert_contains "$(cat "$TMP/bad.out")" "nonexistent.conf" "error for a missing config file"
finish
