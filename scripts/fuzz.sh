#!/usr/bin/env bash
# scripts/fuzz.sh BIN_DIR SECONDS — runs every fuzz_* harness in BIN_DIR for
# SECONDS each, seeded from tests/fuzz/corpus/<name>/.  New corpus entries,
# crash artifacts and logs go to <build>/tests/fuzz/ (next to BIN_DIR), never
# into the source tree.  One line per harness; exits 1 if any harness failed
# (crash, leak, timeout, OOM or a failed invariant).
set -u

if [ $# -ne 2 ]; then
  echo "usage: $0 BIN_DIR SECONDS" >&2
  exit 2
fi
bin=$(cd "$1" && pwd) || exit 2
secs=$2
src=$(cd "$(dirname "$0")/.." && pwd)
out=$(dirname "$bin")/tests/fuzz
status=0 found=0

for exe in "$bin"/fuzz_*; do
  [ -x "$exe" ] || continue
  found=1
  name=$(basename "$exe")
  h=${name#fuzz_}
  work=$out/work_$h
  art=$out/artifacts_$h
  log=$out/$name.log
  mkdir -p "$work" "$art"
  "$exe" -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1 \
    -artifact_prefix="$art/" "$work" "$src/tests/fuzz/corpus/$h" >"$log" 2>&1
  rc=$?
  stats=$(grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -1 | tr -s ' \t' ' ')
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  cov=$(echo "$stats" | grep -oE 'cov: [0-9]+' | cut -d' ' -f2)
  ft=$(echo "$stats" | grep -oE 'ft: [0-9]+' | cut -d' ' -f2)
  corp=$(echo "$stats" | grep -oE 'corp: [0-9]+' | cut -d' ' -f2)
  if [ $rc -eq 0 ]; then
    printf '%-24s ok    %ss runs=%s exec/s=%s cov=%s ft=%s corpus=%s\n' "$name" "$secs" \
      "${runs:-?}" "${eps:-?}" "${cov:-?}" "${ft:-?}" "${corp:-?}"
  else
    status=1
    what=$(grep -oE 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer|UndefinedBehaviorSanitizer)[^(]*' "$log" | head -1)
    [ -n "$what" ] || what=$(grep -m1 -E 'check failed|runtime error' "$log")
    crash=$(grep -oE "Test unit written to [^ ]+" "$log" | tail -1 | sed 's/Test unit written to //')
    printf '%-24s FAIL  rc=%s %s; input %s; log %s\n' "$name" "$rc" "${what:-see log}" \
      "${crash:-?}" "$log"
  fi
done

if [ $found -eq 0 ]; then
  echo "fuzz.sh: no fuzz_* binaries in $bin (configure with -DKEEL_FUZZ=ON)" >&2
  exit 2
fi
exit $status
