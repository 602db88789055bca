#!/usr/bin/env bash
# policy_live.sh — the policy table tests/policy/cases.tsv against a live
# keeld, model by model: keeld with the model's organization document
# applied (keel apply -f), an API token for every user of the table, a real
# keel-agent per host label enrolled with the label's tags, and for every
# case the real request its action means, checked as 2xx vs 403 (a 403 must
# name the deciding statement; "no statement allows" for default-deny).
# For every case, keeld's own explain (as the admin, ?user=) must name the
# statement the table expects, on the real host path.
. "$(dirname "$0")/lib.sh" "${1:-}"

POL=$(cd "$(dirname "$0")/../policy" && pwd)
CASES=$POL/cases.tsv
[ -r "$CASES" ] || fail "no $CASES"

# ---- the table ---------------------------------------------------------------------------
declare -A LTAGS=() # label -> k=v,...
while read -r _ _ label tags; do
  LTAGS[$label]=$tags
done < <(grep '^# label ' "$CASES")
[ "${#LTAGS[@]}" -ge 5 ] || fail "cases.tsv: host labels: ${!LTAGS[*]}"

# tags_json k=v,... — {"k":"v",...}
tags_json() {
  local out="" kv
  local IFS=,
  for kv in $1; do out="$out${out:+,}\"${kv%%=*}\":\"${kv#*=}\""; done
  printf '{%s}' "$out"
}
# tag KEY k=v,... — the value of KEY ("" when absent)
tag() {
  local kv
  local IFS=,
  for kv in $2; do [ "${kv%%=*}" = "$1" ] && { printf '%s' "${kv#*=}"; return; }; done
}
# urlenc TEXT — percent-encode for a query parameter
urlenc() {
  local s=$1 i c out=""
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case "$c" in [a-zA-Z0-9._~/-]) out+=$c ;; *) out+=$(printf '%%%02X' "'$c") ;; esac
  done
  printf '%s' "$out"
}

# agent_obj ID — GET /v1/agents/ID as the admin into AOBJ (version, tags)
agent_obj() {
  AOBJ=$(curl -s --max-time 5 -H "Authorization: Bearer $TOKEN" "$URL/v1/agents/$1")
  AVER=$(printf '%s' "$AOBJ" | grep -oE '"version":[0-9]+' | tail -n 1)
  AVER=${AVER#\"version\":}
  ATAGS=$(printf '%s' "$AOBJ" | grep -oE '"tags":\{[^}]*\}' | head -n 1)
  ATAGS=${ATAGS#\"tags\":}
}

TOTAL=0
for MODEL in decentralized centralized ccoe; do
  DOC=$POL/org-$MODEL.yaml
  D=$TMP/data-$MODEL
  init_data "$D"
  start_keeld "$D" --heartbeat 1s
  kc apply -f "$DOC"
  assert_eq "$KRC" 0 "keel apply -f org-$MODEL.yaml: $KOUT $KERR"
  req GET /v1/org
  assert_status 200 "GET /v1/org"
  assert_eq "$(jget operating_model)" "$MODEL" "operating model after apply"

  # an API token for every user of this model's cases (the admin has $TOKEN)
  declare -A UT=([admin]=$TOKEN)
  for u in $(awk -F'\t' -v m="$MODEL" '$1 == m {print $2}' "$CASES" | sort -u); do
    [ -n "${UT[$u]:-}" ] && continue
    req POST /v1/tokens "{\"name\":\"live\",\"user\":\"$u\"}"
    assert_status 201 "token for $u"
    UT[$u]=$(jget token)
  done

  # one enrolled agent per host label, with the label's tags
  declare -A HOST=()
  for label in "${!LTAGS[@]}"; do
    req POST /v1/agent-tokens "{\"tags\":$(tags_json "${LTAGS[$label]}")}"
    assert_status 201 "enrollment token for $label"
    start_agent "$MODEL-$label" --enroll-token "$(jget token)"
  done
  for label in "${!LTAGS[@]}"; do
    wait_enrolled "$MODEL-$label"
    HOST[$label]=$AID
    agent_obj "$AID"
    assert_eq "$ATAGS" "$(tags_json "${LTAGS[$label]}")" "tags of the $label agent"
  done

  RAN=0
  SKIPPED=0
  N=0
  while IFS=$'\t' read -r m user action resource tags expect stmt; do
    case "$m" in '#'* | '') continue ;; esac
    [ "$m" = "$MODEL" ] || continue
    N=$((N + 1))
    what="$MODEL case $N: $user $action $resource $tags (want $expect by $stmt)"
    tok=${UT[$user]}
    label="" aid="" path=$resource qtags=""
    if [ "${resource#host:}" != "$resource" ]; then
      label=${resource#host:}
      aid=${HOST[$label]:-}
      [ -n "$aid" ] || fail "$what: no agent for label $label"
      qtags=${LTAGS[$label]}
      [ "$tags" != "-" ] && qtags=$tags
      env=$(tag env "$qtags")
      path="app/$(tag app "$qtags")/env/${env:-_}/host/$aid"
    elif [ "$tags" != "-" ]; then
      qtags=$tags
    fi
    ok=201
    case "$action:$resource" in
    exec:run:host:*)
      req POST /v1/commands "{\"target\":\"id=$aid\",\"argv\":[\"true\"]}" "$tok" ;;
    agent:read:host:*)
      ok=200
      req GET "/v1/agents/$aid" "" "$tok" ;;
    agent:update:host:*)
      ok=200
      agent_obj "$aid"
      body_tags=$ATAGS
      [ "$tags" != "-" ] && body_tags=$(tags_json "$tags")
      req PATCH "/v1/agents/$aid" "{\"version\":$AVER,\"tags\":$body_tags}" "$tok" ;;
    audit:read:audit)
      ok=200
      req GET "/v1/audit?limit=1" "" "$tok" ;;
    org:write:org)
      ok=200
      req POST "/v1/apply?dry_run=true" "@$DOC" "$tok" ;;
    agent-token:create:app/*/env/*/agent-token)
      a=${resource#app/}
      a=${a%%/*}
      e=${resource#app/*/env/}
      e=${e%%/*}
      req POST /v1/agent-tokens "{\"tags\":{\"app\":\"$a\",\"env\":\"$e\"}}" "$tok" ;;
    user:create:user/*)
      req POST /v1/users "{\"name\":\"x-$MODEL-$N\"}" "$tok" ;;
    policy:read:org)
      ok=200
      req GET "/v1/policy/explain?action=exec:run&resource=org" "" "$tok" ;;
    *)
      SKIPPED=$((SKIPPED + 1))
      echo "skip: $what: no route for it" >&2
      continue ;;
    esac
    if [ "$expect" = allow ]; then
      [ "$STATUS" = "$ok" ] || fail "$what: HTTP $STATUS, want $ok: $(printf '%.400s' "$BODY")"
    else
      [ "$STATUS" = 403 ] || fail "$what: HTTP $STATUS, want 403: $(printf '%.400s' "$BODY")"
      msg=$(jget message)
      if [ "$stmt" = default-deny ]; then
        assert_contains "$msg" "no statement allows $action on" "$what: 403 message"
      else
        assert_contains "$msg" "denied by " "$what: 403 message"
        assert_contains "$msg" "${stmt%\*}" "$what: 403 message"
      fi
    fi
    check
    # a tag change that went through: put the label's tags back
    if [ "$action" = agent:update ] && [ "$STATUS" = 200 ] && [ "$tags" != "-" ]; then
      agent_obj "$aid"
      req PATCH "/v1/agents/$aid" "{\"version\":$AVER,\"tags\":$(tags_json "${LTAGS[$label]}")}"
      assert_status 200 "restore the tags of $label"
    fi
    # keeld's explain names the statement the table expects, on the real path
    q="user=$user&action=$(urlenc "$action")&resource=$(urlenc "$path")"
    [ -n "$qtags" ] && q="$q&tags=$(urlenc "$qtags")"
    req GET "/v1/policy/explain?$q"
    assert_status 200 "$what: explain"
    got=$(jget statement)
    case "$stmt" in
    *'*') assert_contains "$got" "${stmt%\*}" "$what: explain statement" ;;
    *) assert_eq "$got" "$stmt" "$what: explain statement" ;;
    esac
    assert_eq "$(jget decision)" "$expect" "$what: explain decision"
    RAN=$((RAN + 1))
  done <"$CASES"
  [ "$RAN" -ge 20 ] || fail "$MODEL: only $RAN cases ran live"
  echo "$MODEL: $RAN cases ran live, $SKIPPED skipped (no route)"
  TOTAL=$((TOTAL + RAN))

  # the audit chain holds every one of those decisions
  kc audit verify
  assert_eq "$KRC" 0 "keel audit verify ($MODEL): $KOUT $KERR"
  for label in "${!LTAGS[@]}"; do stop_agent "$MODEL-$label"; done
  stop_keeld
  unset UT HOST
done
echo "all models: $TOTAL cases ran live"
finish
