-- Agents and their enrollment tokens (fleet engine); commands and their
-- per-host runs (exec engine).
CREATE TABLE enroll_tokens (
  id          TEXT PRIMARY KEY,
  secret_hash TEXT NOT NULL,
  tags        TEXT NOT NULL,            -- JSON object applied to agents enrolling with it
  uses_max    INTEGER NOT NULL,
  uses        INTEGER NOT NULL DEFAULT 0,
  created_by  TEXT NOT NULL,
  created_ms  INTEGER NOT NULL,
  expires_ms  INTEGER NOT NULL,
  revoked_ms  INTEGER
);

CREATE TABLE agents (
  id              TEXT PRIMARY KEY,
  hostname        TEXT NOT NULL,
  public_key      TEXT NOT NULL UNIQUE,  -- hex Ed25519
  tags            TEXT NOT NULL,         -- JSON object
  inventory       TEXT NOT NULL,         -- JSON object
  agent_version   TEXT NOT NULL,
  enroll_token_id TEXT NOT NULL,
  created_ms      INTEGER NOT NULL,
  updated_ms      INTEGER NOT NULL,
  last_seen_ms    INTEGER,
  retired_ms      INTEGER,
  version         INTEGER NOT NULL
);

CREATE TABLE commands (
  id         TEXT PRIMARY KEY,
  created_by TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  target     TEXT NOT NULL,
  spec       TEXT NOT NULL               -- JSON: argv | shell, timeout_ms, env, cwd, user, output_cap
);
CREATE INDEX commands_created ON commands(created_ms);

CREATE TABLE command_runs (
  id               TEXT PRIMARY KEY,
  command_id       TEXT NOT NULL REFERENCES commands(id),
  agent_id         TEXT NOT NULL,
  hostname         TEXT NOT NULL,
  status           TEXT NOT NULL,        -- pending | skipped | exited | signaled | timeout | interrupted | failed | refused
  job              TEXT,                 -- the signed job text
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
CREATE INDEX command_runs_command ON command_runs(command_id, hostname);
CREATE INDEX command_runs_agent ON command_runs(agent_id, status);
