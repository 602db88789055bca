-- Runbook executions (runbook engine).  An execution's steps run on agents
-- as runs of the exec engine, whose owner (command_runs.command_id) is then
-- the execution's id: command_runs loses its foreign key to commands.
CREATE TABLE command_runs_new (
  id               TEXT PRIMARY KEY,
  command_id       TEXT NOT NULL,        -- a command's id, or an execution's (exe_...)
  agent_id         TEXT NOT NULL,
  hostname         TEXT NOT NULL,
  status           TEXT NOT NULL,        -- pending | skipped | cancelled | exited | signaled | timeout | interrupted | failed | refused
  job              TEXT,
  sig              TEXT,
  exit_code        INTEGER,
  signal           INTEGER,
  stdout_b64       TEXT,
  stderr_b64       TEXT,
  stdout_truncated INTEGER NOT NULL DEFAULT 0,
  stderr_truncated INTEGER NOT NULL DEFAULT 0,
  stdout_digest    TEXT,
  stderr_digest    TEXT,
  started_ms       INTEGER,
  ended_ms         INTEGER,
  error            TEXT NOT NULL DEFAULT '',
  result_ms        INTEGER
);
INSERT INTO command_runs_new SELECT id, command_id, agent_id, hostname, status, job, sig,
  exit_code, signal, stdout_b64, stderr_b64, stdout_truncated, stderr_truncated,
  stdout_digest, stderr_digest, started_ms, ended_ms, error, result_ms FROM command_runs;
DROP TABLE command_runs;
ALTER TABLE command_runs_new RENAME TO command_runs;
CREATE INDEX command_runs_command ON command_runs(command_id, hostname);
CREATE INDEX command_runs_agent ON command_runs(agent_id, status);

CREATE TABLE executions (
  id              TEXT PRIMARY KEY,
  runbook         TEXT NOT NULL,
  runbook_version INTEGER NOT NULL,
  document        TEXT NOT NULL,         -- the normalized runbook as it was at start
  params          TEXT NOT NULL,         -- JSON object, defaults filled
  requested_by    TEXT NOT NULL,         -- user name (a schedule's owner for scheduled runs)
  by_schedule     INTEGER NOT NULL DEFAULT 0,
  retry_of        TEXT,
  state           TEXT NOT NULL,         -- pending | waiting_approval | running | paused | succeeded | failed | cancelled | timed_out
  reason          TEXT NOT NULL DEFAULT '',
  resumed_after   INTEGER NOT NULL DEFAULT 0,
  pause_until_ms  INTEGER,
  approval_step   INTEGER,               -- the approval step waiting for decisions, if any
  approval_deadline_ms INTEGER,
  approval_message TEXT,
  approved        TEXT NOT NULL DEFAULT '[]', -- indexes of approval steps passed
  created_ms      INTEGER NOT NULL,
  started_ms      INTEGER,
  ended_ms        INTEGER,
  deadline_ms     INTEGER                -- the runbook's timeout, if it has one
);
CREATE INDEX executions_state ON executions(state);
CREATE INDEX executions_created ON executions(created_ms);

CREATE TABLE execution_targets (
  execution_id TEXT NOT NULL REFERENCES executions(id),
  idx          INTEGER NOT NULL,         -- start order
  agent_id     TEXT NOT NULL,
  hostname     TEXT NOT NULL,
  tags         TEXT NOT NULL,            -- JSON object at start
  batch        INTEGER NOT NULL,
  status       TEXT NOT NULL,            -- pending | running | succeeded | failed | skipped | cancelled
  step         INTEGER NOT NULL DEFAULT 0, -- the step running or next to run
  rolled_back  INTEGER NOT NULL DEFAULT 0,
  started_ms   INTEGER,
  ended_ms     INTEGER,
  error        TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (execution_id, idx)
);

CREATE TABLE execution_steps (
  execution_id TEXT NOT NULL REFERENCES executions(id),
  target_idx   INTEGER NOT NULL,
  seq          INTEGER NOT NULL,         -- order of attempts on this target
  step         INTEGER NOT NULL,
  status       TEXT NOT NULL,            -- running | waiting | succeeded | failed | timed_out | interrupted | cancelled
  run_id       TEXT,                     -- the exec engine's run, for agent steps
  exit_code    INTEGER,
  stdout       TEXT NOT NULL DEFAULT '',
  stderr       TEXT NOT NULL DEFAULT '',
  truncated    INTEGER NOT NULL DEFAULT 0,
  started_ms   INTEGER NOT NULL,
  ended_ms     INTEGER,
  deadline_ms  INTEGER,
  error        TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (execution_id, target_idx, seq)
);

CREATE TABLE execution_decisions (
  execution_id TEXT NOT NULL REFERENCES executions(id),
  step         INTEGER NOT NULL,
  user         TEXT NOT NULL,
  decision     TEXT NOT NULL,            -- approve | reject
  comment      TEXT NOT NULL DEFAULT '',
  at_ms        INTEGER NOT NULL,
  PRIMARY KEY (execution_id, step, user)
);

-- Schedules: one row per scheduled runbook, and what each due slot did.
CREATE TABLE schedules (
  runbook        TEXT PRIMARY KEY,
  spec           TEXT NOT NULL,          -- the schedule as last seen (a change restarts it)
  base_ms        INTEGER NOT NULL,       -- slots are computed after this
  last_slot_ms   INTEGER,
  last_execution TEXT,
  last_outcome   TEXT,
  skipped        INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE schedule_events (
  runbook      TEXT NOT NULL,
  slot_ms      INTEGER NOT NULL,
  at_ms        INTEGER NOT NULL,
  outcome      TEXT NOT NULL,            -- started | skipped | denied | failed
  execution_id TEXT,
  reason       TEXT NOT NULL DEFAULT ''
);
CREATE INDEX schedule_events_runbook ON schedule_events(runbook, at_ms);
