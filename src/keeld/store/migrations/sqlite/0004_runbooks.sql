-- Runbook documents as applied (runbook engine): one row per runbook, its
-- normalized document as canonical JSON.  Executions come later.
CREATE TABLE runbooks (
  name       TEXT PRIMARY KEY,
  owner_kind TEXT NOT NULL,              -- application | team
  owner      TEXT NOT NULL,
  spec       TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  version    INTEGER NOT NULL
);
