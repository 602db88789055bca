# lib.sh — shared helpers for Keel's integration tests (bash + curl + sqlite3).
#
#   . "$(dirname "$0")/lib.sh" "$1"      # $1: the directory holding keeld and keel
#
# Gives each test a private temp dir ($TMP, removed on exit), starts and stops
# keeld on 127.0.0.1:0, sends raw HTTP requests (req) and counts checks.  Any
# keeld started here is killed when the test exits, however it exits.

set -u
set -o pipefail

if [ -z "${1:-}" ] || [ ! -x "$1/keeld" ]; then
  echo "usage: $0 BIN_DIR   (the directory holding keeld and keel)" >&2
  exit 2
fi
BIN=$(cd "$1" && pwd)
KEELD=$BIN/keeld
KEEL=$BIN/keel
TEST_NAME=$(basename "$0" .sh)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-integ-$TEST_NAME.XXXXXX")
CHECKS=0
KEELD_LOG=""
URL=""
PID=""
TOKEN=""
STATUS=""
BODY=""
HEADERS=""
_PIDS=()
_NLOG=0

# The CLI must not pick up the invoking user's config or environment.
export XDG_CONFIG_HOME=$TMP/xdg
export HOME=$TMP/home
unset KEEL_SERVER KEEL_TOKEN
mkdir -p "$XDG_CONFIG_HOME" "$HOME"
# ASan: report leaks at exit, but a keeld killed with -9 reports nothing anyway.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}

_cleanup() {
  local p
  for p in "${_PIDS[@]}"; do
    kill -9 "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap _cleanup EXIT

# fail MSG... — report the first caller outside lib.sh, with the keeld log tail.
fail() {
  local i=1 line="?" src="?"
  while [ "$i" -lt "${#BASH_SOURCE[@]}" ]; do
    if [ "${BASH_SOURCE[$i]}" != "${BASH_SOURCE[0]}" ]; then
      src=${BASH_SOURCE[$i]}
      line=${BASH_LINENO[$((i - 1))]}
      break
    fi
    i=$((i + 1))
  done
  echo "FAIL: $TEST_NAME ($(basename "$src"):$line): $*" >&2
  if [ -n "$KEELD_LOG" ] && [ -s "$KEELD_LOG" ]; then
    echo "--- last lines of $KEELD_LOG:" >&2
    tail -n 15 "$KEELD_LOG" >&2
  fi
  exit 1
}

check() { CHECKS=$((CHECKS + 1)); }

assert_eq() { # GOT WANT [WHAT]
  [ "$1" = "$2" ] || fail "${3:-value}: got '$1', want '$2'"
  check
}
assert_ne() { # GOT UNWANTED [WHAT]
  [ "$1" != "$2" ] || fail "${3:-value}: got '$1', which it must not be"
  check
}
assert_contains() { # HAYSTACK NEEDLE [WHAT]
  case "$1" in
  *"$2"*) check ;;
  *) fail "${3:-text} does not contain '$2': $(printf '%.600s' "$1")" ;;
  esac
}
assert_not_contains() { # HAYSTACK NEEDLE [WHAT]
  case "$1" in
  *"$2"*) fail "${3:-text} contains '$2', which it must not: $(printf '%.600s' "$1")" ;;
  *) check ;;
  esac
}
assert_match() { # TEXT ERE [WHAT]
  # a here-string, not a pipe: grep -q stops reading at the first match,
  # and under pipefail the writer's SIGPIPE would fail a text that matched
  grep -Eq -- "$2" <<<"$1" || fail "${3:-text} does not match /$2/: $(printf '%.600s' "$1")"
  check
}
assert_status() { # WANT [WHAT] — checks STATUS from the last req
  [ "$STATUS" = "$1" ] || fail "${2:-request}: HTTP $STATUS, want $1; body: $(printf '%.600s' "$BODY")"
  check
}
# assert_error STATUS CODE [WHAT] — status plus the documented error shape
assert_error() {
  assert_status "$1" "${3:-request}"
  assert_match "$BODY" "^\\{\"error\":\\{\"code\":\"$2\",\"message\":\"([^\"\\\\]|\\\\.)+\"\\}\\}$" "${3:-request} error body"
}
assert_file_mode() { # FILE MODE
  local m
  m=$(stat -c %a "$1") || fail "stat $1"
  assert_eq "$m" "$2" "mode of $1"
}

finish() {
  echo "ok: $CHECKS checks ($TEST_NAME, ${SECONDS}s)"
  exit 0
}

# jget KEY [JSON] — first value of "KEY" in JSON (default $BODY): the string
# without quotes, or the number / true / false / null as written.  Enough for
# the flat answers of the API; no jq.
jget() {
  local text=${2-$BODY} v
  v=$(printf '%s' "$text" | grep -oE "\"$1\":(\"([^\"\\\\]|\\\\.)*\"|[^],}]*)" | head -n 1) || true
  v=${v#\"$1\":}
  v=${v#\"}
  v=${v%\"}
  printf '%s' "$v"
}
# jcount KEY [JSON] — how many times "KEY": occurs
jcount() { printf '%s' "${2-$BODY}" | grep -oE "\"$1\":" | wc -l | tr -d ' '; }

# ---- keeld ------------------------------------------------------------------------

# init_data DIR — keeld init; sets TOKEN to the admin token.
init_data() {
  local out
  out=$("$KEELD" init --data "$1" 2>"$TMP/init.err") || fail "keeld init --data $1: $(cat "$TMP/init.err")"
  TOKEN=$(printf '%s\n' "$out" | tail -n 1)
  [ -n "$TOKEN" ] || fail "keeld init printed no token"
}

# start_keeld DIR [FLAGS...] — keeld --data DIR --listen 127.0.0.1:0 FLAGS
start_keeld() {
  local dir=$1
  shift
  start_keeld_args "$dir" --data "$dir" --listen 127.0.0.1:0 "$@"
}

# start_keeld_args DIR ARGS... — keeld ARGS exactly; DIR is where keeld.url
# appears.  Waits up to 10 s for the URL and /readyz; sets URL, PID, KEELD_LOG.
start_keeld_args() {
  local dir=$1 i code
  shift
  rm -f "$dir/keeld.url"
  _NLOG=$((_NLOG + 1))
  KEELD_LOG=$TMP/keeld.$_NLOG.log
  "$KEELD" "$@" 2>"$KEELD_LOG" &
  PID=$!
  _PIDS+=("$PID")
  URL=""
  for i in $(seq 1 100); do
    if ! kill -0 "$PID" 2>/dev/null; then
      wait "$PID"
      fail "keeld exited with $? while starting: $(cat "$KEELD_LOG")"
    fi
    if [ -z "$URL" ] && [ -s "$dir/keeld.url" ]; then
      URL=$(head -n 1 "$dir/keeld.url")
      case "$URL" in http://*:[0-9]*) ;; *) URL="" ;; esac
    fi
    if [ -n "$URL" ]; then
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$URL/readyz") || true
      [ "$code" = 200 ] && return 0
    fi
    sleep 0.1
  done
  fail "keeld not ready within 10 s (url '$URL')"
}

# stop_keeld [SIGNAL] — signal (default TERM) and wait; sets KEELD_RC.
stop_keeld() {
  local sig=${1:-TERM}
  [ -n "$PID" ] || fail "stop_keeld: no keeld running"
  kill "-$sig" "$PID" 2>/dev/null || fail "keeld (pid $PID) was not running"
  wait "$PID"
  KEELD_RC=$?
  PID=""
}

# req METHOD PATH [BODY] [TOKEN] — sets STATUS, BODY, HEADERS.
# BODY "" sends none; "@FILE" sends the file.  TOKEN defaults to $TOKEN; an
# explicitly empty TOKEN sends no Authorization header.
req() {
  local method=$1 path=$2 body=${3-} tok
  local args=(-s -o "$TMP/req.body" -D "$TMP/req.hdr" -w '%{http_code}' --max-time 30 -X "$method")
  if [ $# -ge 4 ]; then tok=$4; else tok=$TOKEN; fi
  [ -n "$tok" ] && args+=(-H "Authorization: Bearer $tok")
  if [ -n "$body" ]; then
    args+=(-H 'Content-Type: application/json' --data-binary "$body")
  fi
  : >"$TMP/req.body"
  : >"$TMP/req.hdr"
  STATUS=$(curl "${args[@]}" "$URL$path") || STATUS="${STATUS:-000}"
  BODY=$(cat "$TMP/req.body")
  HEADERS=$(tr -d '\r' <"$TMP/req.hdr")
}

# get_has PATH NEEDLE — GET PATH as $TOKEN answers a body containing NEEDLE
# (for wait_for: leaves STATUS/BODY alone)
get_has() {
  local b
  b=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL$1") || return 1
  case "$b" in *"$2"*) return 0 ;; esac
  return 1
}

# header NAME — value of a response header of the last req (case-insensitive)
header() {
  printf '%s\n' "$HEADERS" | grep -i "^$1:" | head -n 1 | sed 's/^[^:]*: *//'
}

# make_user NAME ROLE — creates a user as $TOKEN and a token for it; sets UTOKEN, UTOKEN_ID
make_user() {
  req POST /v1/users "{\"name\":\"$1\",\"role\":\"$2\"}"
  assert_status 201 "create user $1"
  req POST /v1/tokens "{\"name\":\"t-$1\",\"user\":\"$1\"}"
  assert_status 201 "create token for $1"
  UTOKEN=$(jget token)
  UTOKEN_ID=$(jget id)
}

# sql DIR SQL — sqlite3 on DIR/keel.db, failing the test on an error.
sql() {
  sqlite3 -batch -cmd ".timeout 5000" "$1/keel.db" "$2" 2>"$TMP/sql.err" || fail "sqlite3 '$2': $(cat "$TMP/sql.err")"
}

# ---- agents -------------------------------------------------------------------------
# Agents run from $BIN/keel-agent with their state in $TMP/agent-NAME and their
# log (appended across restarts) in $TMP/agent-NAME.log.

KEEL_AGENT=$BIN/keel-agent
declare -A AGENT_PIDS=() AGENT_MARK=()

# wait_for SECS CMD... — run CMD every 0.1 s until it succeeds; 1 on timeout.
wait_for() {
  local secs=$1 end
  shift
  end=$((SECONDS + secs))
  while :; do
    "$@" && return 0
    [ "$SECONDS" -ge "$end" ] && return 1
    sleep 0.1
  done
}

# start_agent NAME ARGS... — keel-agent --server $URL --state $TMP/agent-NAME ARGS
# in the background; AGENT_PIDS[NAME] is its pid.
start_agent() {
  local name=$1
  shift
  [ -x "$KEEL_AGENT" ] || fail "no keel-agent in $BIN"
  mkdir -p "$TMP/agent-$name"
  chmod 700 "$TMP/agent-$name"
  echo "--- start: $*" >>"$TMP/agent-$name.log"
  AGENT_MARK[$name]=$(wc -l <"$TMP/agent-$name.log")
  "$KEEL_AGENT" --server "$URL" --state "$TMP/agent-$name" --log-level debug "$@" \
    2>>"$TMP/agent-$name.log" &
  AGENT_PIDS[$name]=$!
  _PIDS+=("$!")
}

# stop_agent NAME [SIGNAL] — signal (default TERM) and wait; sets AGENT_RC.
stop_agent() {
  local p=${AGENT_PIDS[$1]:-}
  [ -n "$p" ] || fail "stop_agent: agent $1 is not running"
  kill "-${2:-TERM}" "$p" 2>/dev/null || fail "agent $1 (pid $p) was not running"
  wait "$p" 2>/dev/null
  AGENT_RC=$?
  AGENT_PIDS[$1]=""
}

# agent_log NAME — the agent's log so far
agent_log() { cat "$TMP/agent-$1.log" 2>/dev/null; }

# agent_logged NAME TEXT — the agent's log since its last start contains TEXT (for wait_for)
agent_logged() { tail -n "+$((${AGENT_MARK[$1]:-0} + 1))" "$TMP/agent-$1.log" 2>/dev/null | grep -qF -- "$2"; }

# agent_id NAME — the agent id in its state dir's identity.json
agent_id() { jget agent_id "$(tr -d " \n\t" <"$TMP/agent-$1/identity.json" 2>/dev/null)"; }

# free_port — a port on 127.0.0.1 nothing listens on right now.
free_port() {
  local p i
  for i in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"
      return 0
    fi
  done
  return 1
}

# start_listener NAME PATH ARGS... — runs ARGS in the background with "@PORT"
# replaced by a free port, until GET PATH on that port answers 2xx (30 s);
# tries another port when the process dies (someone took the port first).
# Sets LPORT and LPID; the log is $TMP/NAME.log.
start_listener() {
  local name=$1 path=$2 try i p a pid
  local -a args
  shift 2
  for try in 1 2 3 4 5; do
    p=$(free_port) || fail "no free port on 127.0.0.1"
    args=()
    for a in "$@"; do args+=("${a//@PORT/$p}"); done
    "${args[@]}" >"$TMP/$name.log" 2>&1 &
    pid=$!
    _PIDS+=("$pid")
    for i in $(seq 1 300); do
      kill -0 "$pid" 2>/dev/null || break
      if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$p$path"; then
        LPORT=$p
        LPID=$pid
        return 0
      fi
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  fail "$name did not start: $(tail -n 5 "$TMP/$name.log")"
}

# wait_enrolled NAME — wait (10 s) until the agent, since its last start, polls;
# sets AID to its id.
wait_enrolled() {
  wait_for 10 agent_logged "$1" "polling" || fail "agent $1 did not start polling: $(agent_log "$1")"
  AID=$(agent_id "$1")
  [ -n "$AID" ] || fail "agent $1 has no agent_id in identity.json"
}

# agent_status ID — the agent's status as GET /v1/agents/ID says (no req side effects)
agent_status() {
  jget status "$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/agents/$1")"
}
# agent_is ID STATUS — for wait_for
agent_is() { [ "$(agent_status "$1")" = "$2" ]; }

# kc ARGS... — the keel CLI against $URL as $TOKEN; sets KOUT, KERR, KRC.
kc() {
  "$KEEL" --server "$URL" --token "$TOKEN" "$@" >"$TMP/kc.out" 2>"$TMP/kc.err"
  KRC=$?
  KOUT=$(cat "$TMP/kc.out")
  KERR=$(cat "$TMP/kc.err")
}

# agent_auth NAME AS_ID METHOD PATH BODY — an Authorization header value for a
# request signed with the key in $TMP/agent-NAME/identity.json but claiming
# the agent id AS_ID (docs/agent-protocol.md; openssl does the Ed25519)..
agent_auth() {
  local name=$1 as=$2 method=$3 path=$4 body=$5 sk ts nonce digest
  sk=$(jget secret_key "$(tr -d " \n\t" <"$TMP/agent-$name/identity.json")")
  [ ${#sk} -ge 64 ] || fail "agent $name: no secret_key in identity.json"
  # PKCS#8 DER of an Ed25519 private key: fixed prefix + the 32-byte seed.
  printf "$(printf '302e020100300506032b657004220420%s' "${sk:0:64}" | sed 's/../\\x&/g')" >"$TMP/sk.der" ||
    fail "writing the key"
  openssl pkey -inform DER -in "$TMP/sk.der" -out "$TMP/sk.pem" 2>"$TMP/ossl.err" ||
    fail "openssl pkey: $(cat "$TMP/ossl.err")"
  ts=$(date +%s%3N)
  nonce=$(tr -dc "a-z2-7" </dev/urandom 2>/dev/null | head -c 16)
  [ ${#nonce} -eq 16 ] || fail "no nonce"
  digest=$(printf '%s' "$body" | b2sum -l 256 | cut -d' ' -f1)
  printf 'keel-agent-req:v1\n%s\n%s\n%s\n%s\n%s' "$method" "$path" "$ts" "$nonce" "$digest" >"$TMP/sig.msg"
  openssl pkeyutl -sign -inkey "$TMP/sk.pem" -rawin -in "$TMP/sig.msg" -out "$TMP/sig.bin" 2>"$TMP/ossl.err" ||
    fail "openssl pkeyutl: $(cat "$TMP/ossl.err")"
  printf 'KeelAgent %s:%s:%s:%s' "$as" "$ts" "$nonce" "$(od -An -v -tx1 "$TMP/sig.bin" | tr -d ' \n')"
}

# areq METHOD PATH BODY AUTH — like req, with AUTH as the whole Authorization
# value ("" sends none).
areq() {
  local args=(-s -o "$TMP/req.body" -D "$TMP/req.hdr" -w '%{http_code}' --max-time 30 -X "$1")
  [ -n "$4" ] && args+=(-H "Authorization: $4")
  [ -n "$3" ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
  : >"$TMP/req.body"
  : >"$TMP/req.hdr"
  STATUS=$(curl "${args[@]}" "$URL$2") || STATUS="${STATUS:-000}"
  BODY=$(cat "$TMP/req.body")
  HEADERS=$(tr -d '\r' <"$TMP/req.hdr")
}

# ---- keeld's own /metrics (public: no token) ---------------------------------------

# metric SERIES — the value of SERIES, written as keeld writes it (name and
# labels: 'keel_alerts{state="firing"}'), in keeld's /metrics now; "" when absent.
metric() {
  curl -s --max-time 5 "$URL/metrics" | awk -v s="$1" '$1 == s { print $2; exit }'
}
# for wait_for: metric_is SERIES VALUE, metric_ge SERIES MIN
metric_is() { [ "$(metric "$1")" = "$2" ]; }
metric_ge() {
  local v
  v=$(metric "$1")
  [ -n "$v" ] && awk -v v="$v" -v m="$2" 'BEGIN { exit !(v + 0 >= m + 0) }'
}
# check_metrics — GET /metrics into $TMP/metrics.txt and through promtool: a
# format error (exit 1) fails the test; lint remarks (exit 3: names, units)
# are printed, not failed.
check_metrics() {
  local rc=0
  command -v promtool >/dev/null || fail "promtool not installed (package prometheus)"
  curl -sf --max-time 5 -o "$TMP/metrics.txt" "$URL/metrics" || fail "GET /metrics"
  promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1 || rc=$?
  case $rc in
  0) ;;
  3) echo "promtool check metrics, lint remarks only: $(cat "$TMP/promtool.out")" ;;
  *) fail "promtool check metrics (exit $rc): $(cat "$TMP/promtool.out")" ;;
  esac
  check
}
