#!/usr/bin/env bash
# agent_static.sh — the statically linked keel-agent (keel-agent-static in
# sanitizer builds, where keel-agent is the sanitized dynamic one; else
# keel-agent) against this build's keeld.  It maps no shared library; it
# enrolls through a host name (getaddrinfo of "localhost" by glibc's
# built-in files NSS); runs a command, one as another user (as root), and
# one as a user that no NSS source knows and survives it (a static agent
# following nsswitch.conf into libnss_systemd crashes there); pushes
# metrics that come back through /api/v1/query; runs an http check itself
# and hands an https one to keel-agent-dynamic (libcurl's certificate error
# shows that it ran); and for an https:// server execs keel-agent-dynamic,
# or, without one next to it, says what is missing.
. "$(dirname "$0")/lib.sh" "${1:-}"

[ -x "$BIN/keel-agent-static" ] && KEEL_AGENT=$BIN/keel-agent-static
readelf -l "$KEEL_AGENT" >"$TMP/phdrs" 2>&1 || fail "readelf -l $KEEL_AGENT: $(cat "$TMP/phdrs")"
grep -q INTERP "$TMP/phdrs" && fail "$KEEL_AGENT has a program interpreter: it is not statically linked"
check
[ -x "$BIN/keel-agent-dynamic" ] || fail "no keel-agent-dynamic next to $KEEL_AGENT"

D=$TMP/data
init_data "$D"
start_keeld "$D" --heartbeat 1s
export KEEL_SERVER=$URL KEEL_TOKEN=$TOKEN
kc agent token create --uses 3
assert_eq "$KRC" 0 "agent token create: $KERR"
ET=$(printf '%s\n' "$KOUT" | tail -n 1)

# shared_libs PID — the shared objects PID maps (none for a static program)
shared_libs() { awk '$6 ~ /\.so/ { print $6 }' "/proc/$1/maps" | sort -u | tr '\n' ' '; }

# ---- enroll through a host name; nothing shared mapped ----------------------------
KEELD_URL=$URL
URL=${KEELD_URL/127.0.0.1/localhost} start_agent s --enroll-token "$ET" --interval 1s
wait_enrolled s
S=${AGENT_PIDS[s]}
assert_eq "$(shared_libs "$S")" "" "shared objects mapped by the static agent"

# ---- commands: as the agent's user, as another, as nobody known ---------------------
kc run --target '' -- printf static-ok
assert_eq "$KRC" 0 "keel run: $KOUT $KERR"
assert_contains "$KOUT" "static-ok" "command output"
if [ "$(id -u)" = 0 ]; then
  kc run --target '' --user nobody -- id -un
  assert_eq "$KRC" 0 "keel run --user nobody: $KOUT $KERR"
  assert_contains "$KOUT" "nobody" "the command ran as nobody"
fi
kc run --target '' --user "keel-no-such-user-$$" -- true
assert_ne "$KRC" 0 "keel run as an unknown user"
assert_contains "$KOUT$KERR" "no such user" "the unknown user is named as such"
kill -0 "$S" 2>/dev/null || fail "the static agent died looking up an unknown user: $(agent_log s)"
check
assert_eq "$(shared_libs "$S")" "" "shared objects mapped after the user lookups"

# ---- metrics: pushed, queried back ------------------------------------------------
have_load() {
  req GET "/api/v1/query?query=$(jq -rn --arg v "node_load1{agent_id=\"$AID\"}" '$v|@uri')"
  [ "$STATUS" = 200 ] && [ "$(printf '%s' "$BODY" | jq '.data.result | length')" = 1 ]
}
wait_for 10 have_load || fail "no node_load1 of agent $AID after 10 s: $BODY"
check

# ---- http checks: plain in the agent, https in keel-agent-dynamic -----------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -subj /CN=localhost \
  -keyout "$TMP/tls.key" -out "$TMP/tls.crt" >"$TMP/openssl.log" 2>&1 ||
  fail "openssl req: $(cat "$TMP/openssl.log")"
openssl s_server -accept 127.0.0.1:0 -cert "$TMP/tls.crt" -key "$TMP/tls.key" -WWW \
  >"$TMP/s_server.log" 2>&1 </dev/null &
_PIDS+=("$!")
tls_port() { sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/s_server.log" | grep -q .; }
wait_for 10 tls_port || fail "openssl s_server did not start: $(cat "$TMP/s_server.log")"
TP=$(sed -n 's/^ACCEPT 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$TMP/s_server.log")

printf 'kind: Runbook\nname: gates\nowner: {team: ops}\ntargets: ""\nsteps:
  - name: plain
    http: {url: "%s/healthz", expect_body: ok}
  - name: tls
    http: {url: "https://localhost:%s/", expect_status: 200}
    on_failure: continue\n' "$KEELD_URL" "$TP" >"$TMP/gates.yaml"
kc apply -f "$TMP/gates.yaml"
assert_eq "$KRC" 0 "apply the runbook: $KERR"
req POST /v1/executions '{"runbook":"gates","params":{}}'
assert_status 201 "start the runbook"
X=$(jget id)
x_final() {
  req GET "/v1/executions/$X"
  case "$(jget state)" in succeeded | failed | cancelled | timed_out) return 0 ;; esac
  return 1
}
wait_for 20 x_final || fail "execution $X did not finish: $BODY"
STEPS=$(printf '%s' "$BODY" | jq -c '.targets[0].steps')
assert_eq "$(printf '%s' "$STEPS" | jq -r '.[0].status')" succeeded "the plain check: $STEPS"
assert_contains "$(printf '%s' "$STEPS" | jq -r '.[0].stderr')" "HTTP 200, as expected" "the plain check"
# The self-signed certificate is not trusted: libcurl, in keel-agent-dynamic, says so.
assert_eq "$(printf '%s' "$STEPS" | jq -r '.[1].exit_code')" 2 "the https check is a transport failure: $STEPS"
assert_contains "$(printf '%s' "$STEPS" | jq -r '.[1].stderr')" "certificate" "libcurl judged the certificate"
kill -0 "$S" 2>/dev/null || fail "the static agent died in the https check: $(agent_log s)"
check

# ---- an https:// server: keel-agent-dynamic takes over ------------------------------
mkdir -m 700 "$TMP/agent-h"
"$KEEL_AGENT" --server "https://localhost:$TP" --state "$TMP/agent-h" --enroll-token "$ET" \
  >"$TMP/agent-h.log" 2>&1
assert_eq "$?" 1 "enrollment over https against an untrusted certificate: $(cat "$TMP/agent-h.log")"
H=$(cat "$TMP/agent-h.log")
assert_contains "$H" "is served by $BIN/keel-agent-dynamic" "the static agent hands https over"
assert_contains "$H" "certificate" "and keel-agent-dynamic's libcurl did the TLS"

# Alone, it refuses https and names what is missing; http still works.
mkdir -p "$TMP/alone"
cp "$KEEL_AGENT" "$TMP/alone/keel-agent"
"$TMP/alone/keel-agent" --server "https://localhost:$TP" --state "$TMP/agent-h" \
  --enroll-token "$ET" >"$TMP/alone.log" 2>&1
assert_eq "$?" 1 "https without keel-agent-dynamic"
assert_contains "$(cat "$TMP/alone.log")" "$TMP/alone/keel-agent-dynamic" "the message names the missing program"
assert_contains "$(cat "$TMP/alone.log")" "KEEL_AGENT_STATIC=OFF" "and the other remedy"
finish
