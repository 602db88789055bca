#!/usr/bin/env bash
# `make run`: Keel's main job on the embedded default.  Creates ./var on the
# first run (SQLite database, server key, admin user), starts keeld on
# 127.0.0.1:7700 (KEEL_LISTEN overrides), applies examples/org.yaml, starts
# one local keel-agent (state in ./var/agent, enrolled on the first run,
# tagged app=checkout,env=dev), prints the URL and the admin
# token, and stays in the foreground until Ctrl-C, which stops both
# cleanly (SIGTERM: in-flight requests finish, everything is flushed).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/build/bin"
data="${KEEL_DATA:-$root/var}"
listen="${KEEL_LISTEN:-127.0.0.1:7700}"

if [ ! -e "$data/keel.db" ]; then
  if [ -e "$data" ] && [ -n "$(ls -A "$data" 2>/dev/null)" ]; then
    echo "run.sh: $data exists but holds no keel.db; move it away or set KEEL_DATA" >&2
    exit 1
  fi
  rmdir "$data" 2>/dev/null || true
  "$bin/keeld" init --data "$data" >/dev/null
fi

rm -f "$data/keeld.url"
"$bin/keeld" --data "$data" --listen "$listen" &
pid=$!
apid=
trap 'kill -TERM $apid $pid 2>/dev/null || true; wait $pid; exit $?' INT TERM

for _ in $(seq 1 100); do
  if [ -s "$data/keeld.url" ] && curl -fsS "$(cat "$data/keeld.url")/readyz" >/dev/null 2>&1; then
    break
  fi
  if ! kill -0 $pid 2>/dev/null; then
    wait $pid || true
    echo "run.sh: keeld exited during start (is $listen already in use?)" >&2
    exit 1
  fi
  sleep 0.1
done

url=$(cat "$data/keeld.url")
token=$(cat "$data/admin.token")

# One local agent.  It enrolls once with a single-use token; later runs
# reuse its identity in var/agent.
agent_args=(--server "$url" --state "$data/agent")
if [ ! -e "$data/agent/identity.json" ]; then
  enroll=$(curl -fsS -X POST -H "Authorization: Bearer $token" \
    -d '{"tags":{"app":"checkout","env":"dev","role":"local"},"ttl":"10m","uses":1}' "$url/v1/agent-tokens" |
    sed -n 's/.*"token": *"\(kenr_[a-z0-9_]*\)".*/\1/p')
  agent_args+=(--enroll-token "$enroll")
fi
# The example organization (examples/org.yaml): applying it again when
# nothing changed is a no-op, so every start does it.
KEEL_SERVER="$url" KEEL_TOKEN="$token" "$bin/keel" apply -f "$root/examples/org.yaml" |
  tail -1 | sed 's/^/  examples\/org.yaml: /'

"$bin/keel-agent" "${agent_args[@]}" &
apid=$!

cat <<MSG

  Keel is running.
    URL:          $url
    admin token:  $(cat "$data/admin.token")
    data:         $data

  Try:  export KEEL_SERVER=$url KEEL_TOKEN=\$(cat $data/admin.token)
        $bin/keel whoami
        $bin/keel audit verify
        $bin/keel agent list
        $bin/keel run --target app=checkout,env=dev -- uname -a
        $bin/keel policy explain --as chen exec:run app/checkout/env/prod/host/x
        $bin/keel top --once                       # host metrics (after one interval)
        $bin/keel metrics query 'rate(node_cpu_seconds_total{mode="idle"}[1m])'

  Ctrl-C stops keeld and the agent cleanly.

MSG
wait $pid
