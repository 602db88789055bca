#!/usr/bin/env bash
# metrics.sh — /metrics is valid Prometheus text (promtool) and carries the
# documented families.
. "$(dirname "$0")/lib.sh" "${1:-}"
command -v promtool >/dev/null || fail "promtool not installed (package prometheus)"

D=$TMP/data
init_data "$D"
start_keeld "$D"
req GET /v1/whoami
assert_status 200 whoami
req GET /v1/whoami "" ""
assert_status 401 "whoami without a token"
req POST /v1/users '{"name":"m1"}'
assert_status 201 "create a user"
req GET /nope "" ""
assert_status 404 "unknown path"

req GET /metrics "" ""
assert_status 200 metrics
assert_contains "$(header Content-Type)" "text/plain" "Content-Type of /metrics"
printf '%s\n' "$BODY" >"$TMP/metrics.txt"
promtool check metrics <"$TMP/metrics.txt" >"$TMP/promtool.out" 2>&1 || fail "promtool check metrics: $(cat "$TMP/promtool.out")"
check
M=$BODY
assert_match "$M" '^# TYPE keel_http_requests_total counter' "keel_http_requests_total type"
assert_match "$M" 'keel_http_requests_total\{[^}]*route="/v1/whoami"[^}]*code="200"[^}]*\} [1-9]' "whoami 200 counted"
assert_match "$M" 'keel_http_requests_total\{[^}]*route="/v1/whoami"[^}]*code="401"[^}]*\} [1-9]' "whoami 401 counted"
assert_match "$M" 'keel_http_requests_total\{[^}]*route="/v1/users"[^}]*code="201"[^}]*\} [1-9]' "user create counted"
assert_match "$M" '# TYPE keel_http_request_duration_seconds histogram' "duration histogram"
assert_match "$M" 'keel_http_request_duration_seconds_bucket\{[^}]*le="\+Inf"' "+Inf bucket"
assert_match "$M" 'keel_http_request_duration_seconds_count' "histogram count"
assert_match "$M" 'keel_http_request_duration_seconds_sum' "histogram sum"
assert_match "$M" '^keel_audit_[a-z_]*total(\{[^}]*\})? [1-9]' "audit record counter"
assert_match "$M" 'keel_store_commit[a-z_]*seconds' "store commit latency"
assert_match "$M" '^process_resident_memory_bytes [1-9]' process_resident_memory_bytes
assert_match "$M" '^process_cpu_seconds_total [0-9]' process_cpu_seconds_total
assert_match "$M" '^process_open_fds [1-9]' process_open_fds
stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
