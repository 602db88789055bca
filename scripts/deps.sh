#!/usr/bin/env bash
# Installs the Debian packages Keel's build, tests and benchmarks need.
# Idempotent: asks dpkg first and touches apt only when something is missing,
# so a second run on a provisioned machine is a fast no-op.
set -euo pipefail

pkgs=(
  build-essential cmake ninja-build pkg-config
  libc6-dev                         # libc.a, with libsodium-dev's and libjansson-dev's .a: the static keel-agent
  clang libclang-rt-14-dev          # libFuzzer and the sanitizer runtimes
  libmicrohttpd-dev                 # HTTP server
  libcurl4-gnutls-dev               # HTTP client (CLI, agent)
  libjansson-dev                    # JSON
  libfyaml-dev                      # YAML
  libsodium-dev                     # Ed25519, BLAKE2b, random tokens
  libsqlite3-dev sqlite3            # embedded store; sqlite3 shell for tamper tests
  libcmocka-dev                     # unit tests
  prometheus                        # promtool, to validate /metrics output; the PromQL peer
  prometheus-node-exporter          # the real exporter scraped by the metrics tests and benches
  prometheus-alertmanager           # the real Alertmanager the notification tests post to
  python3                           # tests/tools/webhook_receiver.py (notification tests)
  curl procps                       # integration tests drive raw HTTP, read /proc
  openssl                           # integration tests sign agent requests (Ed25519)
  jq                                # integration tests read JSON answers
)

missing=()
for p in "${pkgs[@]}"; do
  st=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [ "$st" = "install ok installed" ] || missing+=("$p")
done

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
  echo "deps.sh: missing packages: ${missing[*]} (run as root, or install them)" >&2
  exit 1
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
