-- Event-driven automation (automation engine, docs/automation.md).
-- What caused an execution: "" or "automation/RULE"; its events carry it
-- (loop guards).  Written by the runbook engine through k_xec_create.
ALTER TABLE executions ADD COLUMN cause TEXT NOT NULL DEFAULT '';

-- Applied AutomationRule documents.
CREATE TABLE automation_rules (
  name        TEXT PRIMARY KEY,
  owner_kind  TEXT NOT NULL,             -- application | team
  owner       TEXT NOT NULL,
  user        TEXT NOT NULL,             -- who applied it: runs act as this user
  spec        TEXT NOT NULL,             -- the normalized document (canonical JSON)
  created_ms  INTEGER NOT NULL,
  updated_ms  INTEGER NOT NULL,
  version     INTEGER NOT NULL
);

-- Every time a rule matched an event: what it did, or why not.
CREATE TABLE automation_runs (
  id            TEXT PRIMARY KEY,        -- aur_...
  rule          TEXT NOT NULL,
  path          TEXT NOT NULL,           -- the rule's policy path then (listing is judged on it)
  at_ms         INTEGER NOT NULL,
  event_id      TEXT NOT NULL,
  event_type    TEXT NOT NULL,
  event_subject TEXT NOT NULL,
  target        TEXT NOT NULL,           -- the cooldown key ("" before params were rendered)
  outcome       TEXT NOT NULL,           -- triggered | dry_run | skipped | denied | failed
  guard         TEXT NOT NULL DEFAULT '', -- skipped: kill_switch | maintenance | loop | cooldown | rate_limit
  reason        TEXT NOT NULL DEFAULT '',
  params        TEXT,                    -- rendered parameters (JSON) when they were
  execution_id  TEXT,
  agents        TEXT,                    -- JSON array: the execution's target agents (loop guard)
  execution_state TEXT,                  -- its last known state
  ended_ms      INTEGER                  -- when it ended
);
CREATE INDEX automation_runs_rule ON automation_runs(rule, at_ms);
CREATE INDEX automation_runs_at ON automation_runs(at_ms);
CREATE INDEX automation_runs_exe ON automation_runs(execution_id);
-- an event delivered again after a crash is judged once per rule
CREATE INDEX automation_runs_event ON automation_runs(event_id, rule);

-- The global kill switch: one row once it was ever set.
CREATE TABLE automation_switch (
  id      INTEGER PRIMARY KEY CHECK (id = 1),
  enabled INTEGER NOT NULL,
  reason  TEXT NOT NULL,
  by_user TEXT NOT NULL,
  at_ms   INTEGER NOT NULL
);
