/* authz.c — the one authorization decision every /v1 route goes through.
 *
 * A request is judged as one unit (principal, action, resource) by the
 * organization's compiled policy (org engine + policy evaluator): explicit
 * deny → guardrail deny → allow → default deny.  Before any organization
 * is applied, the built-in statements give the roles their meaning (admin
 * everything, operator operates, viewer reads).
 *
 * Two things are decided here rather than by statements, because they are
 * about identity, not policy: a user may always see itself (whoami) and
 * manage its own API tokens; an agent may act only on what is its own.
 */
#include <stdio.h>
#include <string.h>

#include "keel/time.h"
#include "server.h"

int k_authz_check(const k_org_t *org, const k_principal_t *who, const char *action,
                  const k_target_t *t, char *reason, size_t reason_len) {
  int own = t->owner_id[0] && !strcmp(t->owner_id, who->user_id);
  k_pol_principal_t p;
  k_pol_resource_t res = {t->path, t->tags};
  k_pol_decision_t d;

  if (!strcmp(who->role, "agent") && !own) {
    snprintf(reason, reason_len, "agent %s may not %s on %s: not its own", who->user_id, action,
             t->path);
    return 0;
  }
  if (!strcmp(action, "whoami:read")) return 1;
  if (!strncmp(action, "token:", 6) && own) return 1;
  k_org_principal(org, who->user, who->role, who->token_created_ms, &p);
  k_policy_decide(k_org_policy(org), &p, action, &res, keel_now_ms(), &d);
  if (!d.allow) {
    /* The policy's own text names the statement; say who asked, too, and
     * for tokens that only their owner (or an admin) manages them. */
    snprintf(reason, reason_len, "%s (%s) may not %s on %s%s: %s",
             who->user[0] ? who->user : "-", who->role, action, t->path,
             !strncmp(action, "token:", 6) ? " (not its own token)" : "", d.reason);
  }
  return d.allow;
}
