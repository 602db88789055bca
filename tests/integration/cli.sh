#!/usr/bin/env bash
# cli.sh — the keel CLI against a real keeld: whoami, users, tokens, the audit
# log (filters, --limit, pagination past 1000 records) and verify, version;
# server / token precedence (flags > environment > config file), the config
# file's warnings and errors; exit statuses (0 ok, 1 failed, 2 usage) and the
# one-line error messages.
. "$(dirname "$0")/lib.sh" "${1:-}"

D=$TMP/data
init_data "$D"
ADMIN=$TOKEN
start_keeld "$D"
DEAD=http://127.0.0.1:1 # nothing listens there
CFG=$XDG_CONFIG_HOME/keel/config
mkdir -p "$XDG_CONFIG_HOME/keel"

# kl ARGS... — keel ARGS (exactly); sets OUT, ERR, RC.
kl() {
  "$KEEL" "$@" >"$TMP/kl.out" 2>"$TMP/kl.err"
  RC=$?
  OUT=$(cat "$TMP/kl.out")
  ERR=$(cat "$TMP/kl.err")
}
# k ARGS... — keel --server $URL --token $ADMIN ARGS
k() { kl --server "$URL" --token "$ADMIN" "$@"; }

assert_rc() { # WANT WHAT
  [ "$RC" = "$1" ] || fail "$2: exit status $RC, want $1; stdout: $(printf '%.400s' "$OUT"); stderr: $(printf '%.400s' "$ERR")"
  check
}
# assert_one_err REGEX WHAT — exactly one line on stderr, matching REGEX
assert_one_err() {
  assert_eq "$(printf '%s\n' "$ERR" | wc -l | tr -d ' ')" 1 "$2: lines on stderr ($ERR)"
  assert_match "$ERR" "$1" "$2: stderr"
}
# kv KEY — the value of a "key  value" line of OUT
kv() { printf '%s\n' "$OUT" | awk -v k="$1" '$1 == k {sub(/^[^ ]+ +/, ""); print; exit}'; }
# jo KEY — jget KEY on OUT, which may be pretty-printed JSON
jo() { jget "$1" "$(printf '%s' "$OUT" | sed -E 's/": /":/g')"; }

# ---- version, help -----------------------------------------------------------------------
kl version
assert_rc 0 version
assert_match "$OUT" '^keel [0-9]+\.[0-9]+\.[0-9]+' "version output"
kl --json version
assert_rc 0 "version --json"
assert_contains "$OUT" '"client":' "version --json"
kl --help
assert_rc 0 "--help"
assert_contains "$OUT" "usage: keel" "--help"
assert_contains "$OUT" "user create" "--help lists the commands"
assert_contains "$OUT" "audit verify" "--help lists the commands"
assert_eq "$ERR" "" "--help stderr"
kl user create --help
assert_rc 0 "user create --help"
assert_contains "$OUT" "usage: keel user create NAME" "user create --help"
assert_contains "$OUT" "--role" "user create --help"
kl user --help
assert_rc 0 "user --help"
assert_contains "$OUT" "user update" "user --help"

# ---- whoami --------------------------------------------------------------------------------
k whoami
assert_rc 0 whoami
assert_eq "$(kv user)" admin "whoami user"
assert_eq "$(kv role)" admin "whoami role"
assert_match "$(kv user_id)" '^usr_' "whoami user_id"
assert_match "$(kv token_id)" '^tok_' "whoami token_id"
assert_eq "$(kv expires_at)" never "whoami expires_at"
assert_not_contains "$OUT" "$ADMIN" "whoami output"
k --json whoami
assert_rc 0 "whoami --json"
assert_match "$OUT" '^\{' "whoami --json"
assert_contains "$OUT" '"user": {' "whoami --json"
assert_contains "$OUT" '"token": {' "whoami --json"
assert_eq "$(jo name)" admin "whoami --json user name"
# --json may come after the command too
k whoami --json
assert_rc 0 "whoami --json after the command"
assert_contains "$OUT" '"role": "admin"' "whoami --json after the command"

# ---- users ----------------------------------------------------------------------------------
k user create alice --role operator --display-name "Alice A." --email alice@example.com
assert_rc 0 "user create alice"
assert_eq "$(kv name)" alice "created name"
assert_eq "$(kv role)" operator "created role"
assert_eq "$(kv display_name)" "Alice A." "created display_name"
assert_eq "$(kv email)" alice@example.com "created email"
assert_eq "$(kv version)" 1 "created version"
ALICE_ID=$(kv id)
assert_match "$ALICE_ID" '^usr_' "created id"
k user create bob
assert_rc 0 "user create bob"
assert_eq "$(kv role)" viewer "default role"
k --json user create carol --role=viewer
assert_rc 0 "user create --json"
assert_eq "$(jo name)" carol "created carol (--json)"
k user create alice
assert_rc 1 "user create alice again"
assert_one_err '^keel: .+ \(HTTP 409 conflict\)$' "name taken"
k user create "Bad Name"
assert_rc 1 "user create with an invalid name"
assert_one_err '^keel: .*name.* \(HTTP 400 bad_request\)$' "invalid name"
k user create dave --role emperor
assert_rc 1 "user create with an invalid role"
assert_one_err '^keel: .*role.* \(HTTP 400 bad_request\)$' "invalid role"

k user list
assert_rc 0 "user list"
assert_match "$(printf '%s\n' "$OUT" | head -n 1)" '^NAME +ROLE +STATUS +DISPLAY NAME +ID +VERSION$' "user list header"
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" 5 "user list lines (header + admin, alice, bob, carol)"
assert_match "$OUT" "alice +operator +active +Alice A\\. +$ALICE_ID +1" "alice's row"
assert_match "$OUT" "bob +viewer +active +- +usr_" "bob's row"
k --json user list
assert_rc 0 "user list --json"
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" 4 "user list --json lines"
assert_eq "$(printf '%s\n' "$OUT" | grep -c '^{"id":"usr_[^"]*","kind":"user"')" 4 "user list --json: one object a line"

k user show alice
assert_rc 0 "user show by name"
assert_eq "$(kv id)" "$ALICE_ID" "user show id"
k user show "$ALICE_ID"
assert_rc 0 "user show by id"
assert_eq "$(kv name)" alice "user show by id"
k --json user show bob
assert_rc 0 "user show --json"
assert_eq "$(jo role)" viewer "user show --json role"
k user show nobody
assert_rc 1 "user show nobody"
assert_one_err "^keel: .*nobody.* \\(HTTP 404 not_found\\)$" "unknown user"
assert_eq "$OUT" "" "stdout of a failed show"

k user update alice --version 1 --role viewer --display-name Alice2
assert_rc 0 "user update"
assert_eq "$(kv version)" 2 "version after the update"
assert_eq "$(kv role)" viewer "role after the update"
assert_eq "$(kv display_name)" Alice2 "display_name after the update"
k user update alice --version 1 --role admin
assert_rc 1 "user update with a stale version"
assert_one_err '^keel: .*version.* \(HTTP 409 conflict\)$' "stale version"
assert_eq "$OUT" "" "stdout of a refused update"
k user show alice
assert_eq "$(kv role)" viewer "the stale update changed nothing"
assert_eq "$(kv version)" 2 "version after the stale update"
k user update alice --version 2 --disabled true
assert_rc 0 "disable alice"
assert_eq "$(kv disabled)" true "alice disabled"
k user update alice --version 3 --disabled false --role operator
assert_rc 0 "enable alice"
assert_eq "$(kv disabled)" false "alice enabled"
k user update alice --version 4
assert_rc 2 "user update with nothing to change"
k user update alice --role admin
assert_rc 2 "user update without --version"
assert_contains "$ERR" "--version" "user update without --version"
k user update alice --version two --role admin
assert_rc 2 "user update with --version two"
k user update alice --version 4 --disabled maybe
assert_rc 2 "user update --disabled maybe"

# ---- tokens ---------------------------------------------------------------------------------
k token create --user bob --name ci
assert_rc 0 "token create for bob"
BOB_TOK=$(printf '%s\n' "$OUT" | tail -n 1)
BOB_TOK_ID=$(kv id)
assert_match "$BOB_TOK_ID" '^tok_' "token id"
assert_eq "$(kv user)" bob "token user"
assert_eq "$(kv status)" active "token status"
assert_contains "$OUT" "secret (shown once" "token create output"
assert_ne "$BOB_TOK" "" "token secret (last line)"
assert_ne "$BOB_TOK" "$BOB_TOK_ID" "token secret is not the id"
kl --server "$URL" --token "$BOB_TOK" whoami
assert_rc 0 "whoami with the new token"
assert_eq "$(kv user)" bob "whoami with the new token"
assert_eq "$(kv token_id)" "$BOB_TOK_ID" "whoami token id"
# bob makes one for himself (the default user is the caller)
kl --server "$URL" --token "$BOB_TOK" token create --name own --ttl 1h
assert_rc 0 "bob creates his own token"
BOB_TOK2=$(printf '%s\n' "$OUT" | tail -n 1)
BOB_TOK2_ID=$(kv id)
assert_ne "$(kv expires_at)" "-" "expires_at of a token with --ttl"
kl --server "$URL" --token "$BOB_TOK2" whoami
assert_rc 0 "whoami with bob's own token"
assert_eq "$(kv user)" bob "whoami with bob's own token"
k token create --ttl 1h --expires 2030-01-01T00:00:00Z
assert_rc 2 "token create with --ttl and --expires"
kl --server "$URL" --token "$BOB_TOK" token create --user alice
assert_rc 1 "viewer creates a token for alice"
assert_one_err '^keel: .+ \(HTTP 403 forbidden\)$' "viewer makes a token for another user"

k token list
assert_rc 0 "token list"
assert_match "$(printf '%s\n' "$OUT" | head -n 1)" '^ID +NAME +USER +STATUS +CREATED +EXPIRES$' "token list header"
assert_match "$OUT" "$BOB_TOK_ID +ci +bob +active +[0-9T:.Z-]+ +never" "bob's token row"
assert_contains "$OUT" "$BOB_TOK2_ID" "token list"
assert_contains "$OUT" bootstrap "token list shows the admin token"
assert_not_contains "$OUT" "$BOB_TOK" "token list (secrets)"
k token list --user bob
assert_rc 0 "token list --user bob"
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" 3 "bob's tokens (header + 2)"
assert_not_contains "$OUT" bootstrap "token list --user bob"
kl --server "$URL" --token "$BOB_TOK" --json token list
assert_rc 0 "bob lists his tokens (--json)"
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" 2 "bob's own tokens (--json lines)"
assert_not_contains "$OUT" '"user":"admin"' "bob's token list"

k token revoke "$BOB_TOK2_ID"
assert_rc 0 "token revoke"
assert_eq "$OUT" "revoked $BOB_TOK2_ID" "token revoke output"
kl --server "$URL" --token "$BOB_TOK2" whoami
assert_rc 1 "whoami with a revoked token"
assert_one_err '^keel: .*revoked.* \(HTTP 401 unauthorized\)$' "revoked token"
k token list --user bob
assert_match "$OUT" "$BOB_TOK2_ID +own +bob +revoked " "revoked token row"
k token revoke tok_doesnotexist
assert_rc 1 "revoke an unknown token"
assert_one_err '^keel: .+ \(HTTP 404 not_found\)$' "revoke an unknown token"
k token revoke
assert_rc 2 "token revoke without an id"
kl --server "$URL" --token "$BOB_TOK" token revoke "$BOB_TOK_ID" --json
assert_rc 0 "bob revokes his own token (--json)"
assert_eq "$(jo status)" revoked "token revoke --json status"

# ---- usage errors: exit 2, nothing sent (the server is unreachable) ---------------------------
usage() { # WHAT ERR-REGEX ARGS...
  local what=$1 re=$2
  shift 2
  kl --server "$DEAD" --token x "$@"
  assert_rc 2 "$what"
  assert_match "$ERR" "$re" "$what: stderr"
  assert_contains "$ERR" "usage: keel" "$what: usage line"
  assert_not_contains "$ERR" "cannot reach" "$what: nothing sent"
  assert_eq "$OUT" "" "$what: stdout"
}
usage "unknown command" "^keel: unknown command 'frobnicate'" frobnicate
usage "unknown subcommand" "^keel: unknown command 'user frob'" user frob
usage "group without a command" "^keel: user: missing command \\(one of: create, list, show, update\\)" user
usage "no command" "^keel: missing command" --json
usage "unknown command flag" "^keel: unknown flag '--colour'" whoami --colour
usage "unknown flag before the command" "^keel: unknown flag '--colour'" --colour whoami
usage "missing argument" "^keel: missing NAME" user create
usage "missing id" "^keel: missing NAME\\|ID" user show
usage "flag without its value" "^keel: flag '--role' needs a value" user create x --role
usage "extra argument" "^keel: unexpected argument 'y'" user show x y
usage "bad --limit" "^keel: --limit: expected a positive integer" audit log --limit 0
usage "switch with a value" "^keel: flag '--json' takes no value" --json=yes whoami
# an unknown flag's value is not echoed (it may be a secret)
kl --server "$DEAD" whoami --tokn=s3cr3t-value
assert_rc 2 "misspelt --token"
assert_not_contains "$ERR" "s3cr3t-value" "message for a misspelt flag"

# ---- server errors and an unreachable server: exit 1, one line --------------------------------
kl --server "$URL" --token "$BOB_TOK" whoami
assert_rc 1 "whoami with bob's revoked token"
assert_one_err '^keel: .+ \(HTTP 401 unauthorized\)$' "401"
kl --server "$URL" --token "keel_garbage" whoami
assert_rc 1 "whoami with a garbage token"
assert_one_err '^keel: .+ \(HTTP 401 unauthorized\)$' "garbage token"
make_user vic viewer
VIC=$UTOKEN
kl --server "$URL" --token "$VIC" user create mallory --role admin
assert_rc 1 "viewer creates a user"
assert_one_err '^keel: .*viewer.* \(HTTP 403 forbidden\)$' "403"
kl --server "$URL" --token "$VIC" audit log
assert_rc 1 "viewer reads the audit log"
assert_one_err '^keel: .+ \(HTTP 403 forbidden\)$' "403 on audit log"
assert_eq "$OUT" "" "stdout of a refused audit log"
kl --server "$DEAD" --token "$ADMIN" whoami
assert_rc 1 "unreachable server"
assert_one_err "^keel: .*$DEAD" "unreachable server named"
assert_eq "$OUT" "" "stdout with an unreachable server"
kl --server "$DEAD" --token "$ADMIN" audit log --limit 3
assert_rc 1 "audit log from an unreachable server"
assert_one_err "^keel: .*$DEAD" "unreachable server named (audit log)"

# ---- config precedence: flags > environment > config file --------------------------------------
# Each source names a different user, so whoami shows which one won.
make_user envuser viewer
ENV_TOK=$UTOKEN
make_user cfguser viewer
CFG_TOK=$UTOKEN
printf 'server = %s\ntoken = %s\n' "$URL" "$CFG_TOK" >"$CFG"
chmod 600 "$CFG"
kl whoami
assert_rc 0 "server and token from the config file"
assert_eq "$(kv user)" cfguser "token from the config file"
assert_eq "$ERR" "" "no warning for a mode-600 config file"
# config file wrong, environment right
printf 'server = %s\ntoken = %s\n' "$DEAD" "keel_wrong" >"$CFG"
KEEL_SERVER=$URL KEEL_TOKEN=$ENV_TOK kl whoami
assert_rc 0 "environment over a wrong config file"
assert_eq "$(kv user)" envuser "KEEL_TOKEN over the config file"
kl whoami
assert_rc 1 "the wrong config file alone"
assert_one_err "^keel: .*$DEAD" "server from the config file is used"
printf 'server = %s\ntoken = %s\n' "$URL" "keel_wrong" >"$CFG"
kl whoami
assert_rc 1 "a wrong token in the config file alone"
assert_one_err '^keel: .+ \(HTTP 401 unauthorized\)$' "token from the config file is used"
KEEL_TOKEN=$ENV_TOK kl whoami
assert_rc 0 "KEEL_TOKEN over the config file's token"
assert_eq "$(kv user)" envuser "KEEL_TOKEN over the config file's token"
printf 'server = %s\ntoken = %s\n' "$DEAD" "$CFG_TOK" >"$CFG"
KEEL_SERVER=$URL kl whoami
assert_rc 0 "KEEL_SERVER over the config file's server"
assert_eq "$(kv user)" cfguser "token still from the config file"
# environment wrong, flags right
KEEL_SERVER=$DEAD KEEL_TOKEN=keel_wrong kl --server "$URL" --token "$ADMIN" whoami
assert_rc 0 "flags over a wrong environment"
assert_eq "$(kv user)" admin "--token over KEEL_TOKEN"
KEEL_SERVER=$DEAD KEEL_TOKEN=$ENV_TOK kl --server "$URL" whoami
assert_rc 0 "--server over KEEL_SERVER"
assert_eq "$(kv user)" envuser "KEEL_TOKEN with --server"
KEEL_SERVER=$URL KEEL_TOKEN=keel_wrong kl --token "$ADMIN" whoami
assert_rc 0 "--token over KEEL_TOKEN"
assert_eq "$(kv user)" admin "--token over KEEL_TOKEN"
KEEL_SERVER=$DEAD KEEL_TOKEN=$ENV_TOK kl whoami
assert_rc 1 "the wrong KEEL_SERVER alone"
assert_one_err "^keel: .*$DEAD" "KEEL_SERVER is used"
# flags after the command count too
KEEL_SERVER=$DEAD kl whoami --server "$URL" --token "$ADMIN"
assert_rc 0 "global flags after the command"
assert_eq "$(kv user)" admin "global flags after the command"

# a config file readable by others that holds a token: a warning, still works
printf 'server = %s\ntoken = %s\n' "$URL" "$CFG_TOK" >"$CFG"
chmod 644 "$CFG"
kl whoami
assert_rc 0 "whoami with a mode-644 config file"
assert_eq "$(kv user)" cfguser "whoami with a mode-644 config file"
assert_match "$ERR" "^keel: warning: .*$CFG.*readable by others" "warning for a mode-644 config file"
assert_not_contains "$ERR" "$CFG_TOK" "the warning"
# ... none when the file holds no token
printf 'server = %s\n' "$URL" >"$CFG"
chmod 644 "$CFG"
kl --token "$ADMIN" whoami
assert_rc 0 "mode-644 config file without a token"
assert_eq "$ERR" "" "no warning for a config file without a token"
# an unknown key: exit 2 naming it, even when flags cover everything
printf 'server = %s\ncolour = blue\n' "$URL" >"$CFG"
chmod 600 "$CFG"
kl whoami
assert_rc 2 "unknown key in the config file"
assert_one_err "^keel: .*colour" "unknown config key"
assert_contains "$ERR" "$CFG" "unknown config key: names the file"
kl --server "$URL" --token "$ADMIN" whoami
assert_rc 2 "unknown key in the config file, with flags"
assert_eq "$OUT" "" "stdout with a broken config file"
printf 'server %s\n' "$URL" >"$CFG"
kl --server "$URL" --token "$ADMIN" whoami
assert_rc 2 "config line without ="
# no token anywhere
printf 'server = %s\n' "$URL" >"$CFG"
kl whoami
assert_rc 2 "no token anywhere"
assert_contains "$ERR" "no token" "no token anywhere"
rm -f "$CFG"

# ---- audit log -----------------------------------------------------------------------------------
k audit log
assert_rc 0 "audit log"
assert_match "$(printf '%s\n' "$OUT" | head -n 1)" '^SEQ +TIME +ACTOR +ACTION +TARGET +OUTCOME +STATUS$' "audit log header"
assert_match "$OUT" '^1 +[0-9T:.Z-]+ +keeld:init +user:create +user/admin +ok +201' "audit log: the first record"
assert_match "$OUT" 'user:admin +user:update +user/alice +failed +409' "audit log: the stale update"
assert_match "$OUT" 'user:vic +user:create +user/mallory +denied +403' "audit log: the denial"
k --json audit log
assert_rc 0 "audit log --json"
NJ=$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')
assert_eq "$(printf '%s\n' "$OUT" | grep -c '^{"seq":[0-9]*,"time":"[^"]*","actor":"[^"]*","action":"[^"]*".*"hash":"[0-9a-f]*"}$')" "$NJ" "audit log --json: one record a line"
k audit log
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" "$((NJ + 1))" "audit log: table rows = --json lines"
k --json audit log --action user:create
assert_rc 0 "audit log --action"
NA=$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')
[ "$NA" -ge 8 ] || fail "want >= 8 user:create records, got $NA"
check
assert_eq "$(printf '%s\n' "$OUT" | grep -c '"action":"user:create"')" "$NA" "--action filter"
assert_contains "$OUT" '"target":"user/carol"' "--action user:create"
k audit log --actor user:vic
assert_rc 0 "audit log --actor"
assert_eq "$(printf '%s\n' "$OUT" | tail -n +2 | awk '$3 != "user:vic"' | wc -l | tr -d ' ')" 0 "--actor filter (table)"
assert_ne "$(printf '%s\n' "$OUT" | tail -n +2 | wc -l | tr -d ' ')" 0 "vic's records"
k --json audit log --actor user:admin --action user:update
assert_rc 0 "audit log --actor --action"
assert_eq "$(printf '%s\n' "$OUT" | grep -c '"actor":"user:admin","action":"user:update"')" \
  "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" "both filters"
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" 4 "admin's user:update records (3 ok + 1 stale)"
k --json audit log --since 2000-01-01T00:00:00Z --limit 2
assert_rc 0 "audit log --since"
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" 2 "--since with --limit 2"
k audit log --since yesterday
assert_rc 1 "audit log --since yesterday"
assert_one_err '^keel: .*since.* \(HTTP 400 bad_request\)$' "bad --since"
for n in 1 7; do
  k --json audit log --limit "$n"
  assert_rc 0 "audit log --json --limit $n"
  assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" "$n" "audit log --json --limit $n lines"
  k audit log --limit "$n"
  assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" "$((n + 1))" "audit log --limit $n lines (with the header)"
done
k --json audit log --limit 3
assert_match "$(printf '%s\n' "$OUT" | head -n 1)" '^\{"seq":1,' "--limit shows the oldest first"

# ---- pagination past 1000 records ------------------------------------------------------------------
# Denied requests are audited too: 1100 requests with a bad token.
export URL
seq 1 1100 | xargs -P 8 -I{} curl -s -o /dev/null -w '%{http_code}\n' --max-time 20 \
  -H "Authorization: Bearer keel_bad{}" "$URL/v1/whoami" >"$TMP/bad.codes"
assert_eq "$(grep -c '^401$' "$TMP/bad.codes")" 1100 "1100 answers 401 to a bad token"
k audit verify
assert_rc 0 "audit verify"
assert_match "$OUT" '^intact: [0-9]+ records$' "verify output"
NREC=${OUT#intact: }
NREC=${NREC% records}
[ "$NREC" -gt 1100 ] || fail "want > 1100 audit records, got $NREC"
check
assert_eq "$NREC" "$(sql "$D" 'SELECT count(*) FROM audit_log')" "verify's count vs the table"
k --json audit log
assert_rc 0 "audit log --json over >1000 records"
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" "$NREC" "audit log --json lines vs verify's count"
# every record once, in order, across the page boundary
printf '%s\n' "$OUT" | grep -oE '^\{"seq":[0-9]+' | cut -d: -f2 >"$TMP/seqs"
seq 1 "$NREC" >"$TMP/want.seqs"
cmp -s "$TMP/seqs" "$TMP/want.seqs" || fail "audit log --json: seqs are not 1..$NREC in order: $(diff "$TMP/want.seqs" "$TMP/seqs" | head -n 5)"
check
k audit log
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" "$((NREC + 1))" "audit log table lines over >1000 records"
k --json audit log --limit 1005
assert_eq "$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')" 1005 "--limit 1005 across the page boundary"
assert_match "$(printf '%s\n' "$OUT" | tail -n 1)" '^\{"seq":1005,' "the 1005th record"
k --json audit log --action whoami:read
assert_rc 0 "audit log --action whoami:read"
NW=$(printf '%s\n' "$OUT" | wc -l | tr -d ' ')
assert_eq "$NW" "$(sql "$D" "SELECT count(*) FROM audit_log WHERE action = 'whoami:read'")" "--action over >1000 records"
[ "$NW" -ge 1100 ] || fail "want >= 1100 whoami:read records, got $NW"
check

# ---- audit verify after an edit ---------------------------------------------------------------------
k --json audit verify
assert_rc 0 "audit verify --json"
assert_eq "$(jo intact)" true "verify --json intact"
assert_eq "$(jo records)" "$NREC" "verify --json records"
sql "$D" "UPDATE audit_log SET actor = 'user:eve' WHERE seq = 5"
k audit verify
assert_rc 1 "audit verify after an edit"
assert_match "$OUT" '^broken: record 5: .+' "verify output after an edit"
k --json audit verify
assert_rc 1 "audit verify --json after an edit"
assert_eq "$(jo intact)" false "verify --json intact after an edit"
assert_eq "$(jo first_bad_seq)" 5 "verify --json first_bad_seq"
kl --server "$URL" --token "$VIC" audit verify
assert_rc 1 "viewer runs audit verify"
assert_one_err '^keel: .+ \(HTTP 403 forbidden\)$' "403 on audit verify"

# ---- runbook executions and schedules: help, usage errors, unknown ids ---------------------------
kl --help
assert_contains "$OUT" "runbook start NAME [-p k=v]... [--watch]" "--help lists runbook start"
assert_contains "$OUT" "schedule list" "--help lists schedule list"
kl execution --help
assert_rc 0 "execution --help"
for w in list show watch approve reject resume cancel retry; do
  assert_contains "$OUT" "execution $w" "execution --help lists $w"
done
usage "runbook start without a name" "^keel: missing NAME" runbook start
usage "-p without a value" "^keel: flag '-p' needs k=v" runbook start x -p
usage "-p without '='" "^keel: -p: expected k=v, got 'foo'" runbook start x -p foo
usage "--param= without '='" "^keel: --param: expected k=v, got 'foo'" runbook start x --param=foo
usage "-p with an empty key" "^keel: -p: expected k=v, got '=v'" runbook start x -p a=1 -p =v
usage "execution show without an id" "^keel: missing ID" execution show
usage "execution watch with two ids" "^keel: unexpected argument 'y'" execution watch x y
usage "execution list --limit 0" "^keel: --limit: expected a positive integer" execution list --limit 0
usage "resume takes no comment" "^keel: unknown flag '--comment'" execution resume x --comment hi
usage "retry without an id" "^keel: missing ID" execution retry --failed-only
usage "schedule list takes no argument" "^keel: unexpected argument 'x'" schedule list x
k runbook start nosuch -p a=b
assert_rc 1 "start an unknown runbook"
assert_one_err '^keel: .+ \(HTTP 404 not_found\)$' "start an unknown runbook"
k execution show exe_nosuch
assert_rc 1 "show an unknown execution"
assert_one_err '^keel: .+ \(HTTP 404 not_found\)$' "show an unknown execution"
k execution watch exe_nosuch
assert_rc 1 "watch an unknown execution"
assert_one_err '^keel: .+ \(HTTP 404 not_found\)$' "watch an unknown execution"
k execution list
assert_rc 0 "execution list"
assert_match "$OUT" '^ID +RUNBOOK +STATE +TARGETS' "execution list header"
k schedule list
assert_rc 0 "schedule list"
assert_match "$OUT" '^RUNBOOK +SCHEDULE +OWNER +NEXT' "schedule list header"

stop_keeld
assert_eq "$KEELD_RC" 0 "keeld exit status"
finish
