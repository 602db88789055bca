#!/usr/bin/env bash
# agent_rss.sh — keel-agent's memory footprint and connections, idle with
# one connection to a real keeld, then again after one command ran through
# it.  Prints figures; never passes or fails (exit 1 only when it could not
# measure).
#
#   bench/agent_rss.sh [BIN_DIR]     # default build/bin: keeld, keel-agent
#
# IDLE_S (default 10) and AFTER_S (default 5) set the idle times; AGENT_ARGS
# (split on spaces) are more agent flags, e.g. the watches:
#   AGENT_ARGS="--interval 1s --watch-process sshd --check ok=/bin/true --check-interval 1s"
set -u
set -o pipefail

BIN=${1:-build/bin}
IDLE_S=${IDLE_S:-10}
AFTER_S=${AFTER_S:-5}
for p in keeld keel-agent; do
  if [ ! -x "$BIN/$p" ]; then
    echo "usage: $0 [BIN_DIR]   ($BIN/$p not found)" >&2
    exit 2
  fi
done
BIN=$(cd "$BIN" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/keel-agent-rss.XXXXXX")
SRV=$TMP/keeld
AG=$TMP/agent
KEELD_PID=""
AGENT_PID=""

cleanup() {
  local p
  for p in "$AGENT_PID" "$KEELD_PID"; do
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -rf "$TMP"
}
trap cleanup EXIT

die() {
  echo "agent_rss: $*" >&2
  for f in "$TMP/keeld.log" "$TMP/agent.log"; do
    [ -s "$f" ] && { echo "--- $f:" >&2; tail -n 15 "$f" >&2; }
  done
  exit 1
}

# api METHOD PATH [BODY] — prints the body; fails on a non-2xx status.
api() {
  curl -sS -f -X "$1" -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' \
    ${3:+--data-binary "$3"} "$URL$2"
}

"$BIN/keeld" init --data "$SRV" >"$TMP/init.log" 2>&1 || die "keeld init failed: $(cat "$TMP/init.log")"
"$BIN/keeld" --data "$SRV" --listen 127.0.0.1:0 >"$TMP/keeld.log" 2>&1 &
KEELD_PID=$!
for _ in $(seq 100); do
  [ -s "$SRV/keeld.url" ] && break
  kill -0 "$KEELD_PID" 2>/dev/null || die "keeld exited"
  sleep 0.1
done
[ -s "$SRV/keeld.url" ] || die "keeld did not write keeld.url"
URL=$(head -n 1 "$SRV/keeld.url")
ADMIN=$(tr -d '\n' <"$SRV/admin.token")
for _ in $(seq 100); do curl -sf "$URL/readyz" >/dev/null && break; sleep 0.1; done

ENROLL=$(api POST /v1/agent-tokens '{"uses":1}' | sed -n 's/.*"token" *: *"\([^"]*\)".*/\1/p')
[ -n "$ENROLL" ] || die "cannot create an enrollment token"

# shellcheck disable=SC2086 # AGENT_ARGS is split on purpose
"$BIN/keel-agent" --server "$URL" --state "$AG" --enroll-token "$ENROLL" ${AGENT_ARGS:-} \
  >"$TMP/agent.log" 2>&1 &
AGENT_PID=$!
for _ in $(seq 100); do
  api GET /v1/agents 2>/dev/null | grep -q '"status" *: *"online"' && break
  kill -0 "$AGENT_PID" 2>/dev/null || die "keel-agent exited"
  sleep 0.1
done
api GET /v1/agents | grep -q '"status" *: *"online"' || die "the agent did not come online"

# figures LABEL — one line of VmRSS etc. (KiB) and the TCP connections held.
figures() {
  local st=/proc/$AGENT_PID/status socks tcp ino
  [ -r "$st" ] || die "keel-agent is gone"
  socks=0
  tcp=0
  for ino in $(ls -l "/proc/$AGENT_PID/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\].*/\1/p'); do
    socks=$((socks + 1))
    # Established (01) TCP connections, v4 or v6, by the socket's inode.
    if awk -v i="$ino" '$10 == i && $4 == "01" { f = 1 } END { exit !f }' \
      /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
      tcp=$((tcp + 1))
    fi
  done
  printf '%-26s' "$1"
  for k in VmRSS VmHWM RssAnon RssFile RssShmem; do
    printf ' %s=%s' "$k" "$(awk -v k="$k:" '$1 == k { print $2 }' "$st")"
  done
  printf ' (KiB)  sockets=%d tcp_established=%d\n' "$socks" "$tcp"
}

echo "keel-agent footprint ($BIN/keel-agent${AGENT_ARGS:+ $AGENT_ARGS}, server $URL)"
echo "libraries: $(awk '$6 ~ /\.so/ { print $6 }' "/proc/$AGENT_PID/maps" | sort -u |
  sed 's|.*/||' | tr '\n' ' ')"
sleep "$IDLE_S"
figures "idle ${IDLE_S}s:"

CMD=$(api POST /v1/commands '{"target":"","argv":["head","-c","1000000","/dev/urandom"]}') ||
  die "cannot submit the command"
CID=$(printf '%s' "$CMD" | sed -n 's/.*"id" *: *"\(cmd_[^"]*\)".*/\1/p' | head -n 1)
[ -n "$CID" ] || die "no command id in: ${CMD:0:200}"
# Wait until the result is stored.
for _ in $(seq 150); do
  api GET "/v1/commands/$CID" 2>/dev/null | grep -q '"done" *: *true' && break
  sleep 0.1
done
api GET "/v1/commands/$CID" | grep -q '"done" *: *true' || die "the command did not finish"
api GET "/v1/commands/$CID" | grep -o '"status" *: *"[a-z]*"' | head -n 1 | sed 's/^/command run: /'
sleep "$AFTER_S"
figures "after 1 MB command + ${AFTER_S}s:"
