/* authz.c — the one authorization decision every /v1 route goes through.
 *
 * Roles for now (the policy engine replaces this body, not its callers):
 *   admin    — everything;
 *   operator — every read but other users' tokens, audit verification, its
 *              own tokens;
 *   viewer   — reads of users, agents and itself, its own tokens; not the
 *              audit trail, not command output;
 *   agent    — (an agent's signature) poll for its jobs, report on its own
 *              runs and inventory, nothing else;
 *   enroll   — (an enrollment token) enroll one agent.
 * Operators also create enrollment tokens, manage agents and run commands.
 * "Own tokens": token:create/read/revoke where the target's owner is the
 * caller.  A request is judged as one unit (who, action, target).
 */
#include <stdio.h>
#include <string.h>

#include "server.h"

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), m = strlen(suffix);
  return n >= m && !strcmp(s + n - m, suffix);
}

int k_authz_check(const k_principal_t *who, const char *action, const k_target_t *t, char *reason,
                  size_t reason_len) {
  int own = t->owner_id[0] && !strcmp(t->owner_id, who->user_id);

  if (!strcmp(who->role, "agent")) {
    /* An agent acts only on what is its own: its poll, its runs. */
    if ((!strcmp(action, "agent:poll") || !strcmp(action, "agent:report")) && own) return 1;
    snprintf(reason, reason_len, "agent %s may not %s on %s", who->user_id, action, t->path);
    return 0;
  }
  if (!strcmp(who->role, "enroll")) {
    if (!strcmp(action, "agent:enroll")) return 1;
    snprintf(reason, reason_len, "an enrollment token may only enroll an agent");
    return 0;
  }
  if (!strcmp(who->role, "admin")) return 1;
  if (!strncmp(action, "token:", 6) && own) return 1;
  if (!strcmp(action, "whoami:read")) return 1;
  if (!strcmp(who->role, "operator")) {
    /* Tokens are the owner's (above) or an admin's business, reads included
     * (docs/api.md: token:read is own tokens; admin all). */
    if ((ends_with(action, ":read") && strncmp(action, "token:", 6) != 0) ||
        !strcmp(action, "audit:verify") || !strcmp(action, "agent-token:create") ||
        !strcmp(action, "agent:update") || !strcmp(action, "agent:retire") ||
        !strcmp(action, "exec:run"))
      return 1;
  } else if (!strcmp(who->role, "viewer")) {
    if (!strcmp(action, "user:read") || !strcmp(action, "agent:read")) return 1;
  }
  if (!strncmp(action, "token:", 6) && t->owner_id[0])
    snprintf(reason, reason_len, "role %s may %s only its own tokens (user '%s' is not the owner of %s)",
             who->role, action, who->user, t->path);
  else
    snprintf(reason, reason_len, "role %s may not %s on %s (user '%s')", who->role, action, t->path,
             who->user);
  return 0;
}
