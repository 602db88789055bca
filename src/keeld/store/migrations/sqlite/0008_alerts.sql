-- Alert rules and their alerts (alert engine, src/keeld/alert/;
-- docs/alerts.md).  The store is the truth: keeld's memory is a cache of
-- these rows, rebuilt from them at start, so a restart neither resets a
-- `for` nor fires an alert twice.
CREATE TABLE alert_rules (
  name       TEXT PRIMARY KEY,
  owner_kind TEXT NOT NULL,              -- application | team
  owner      TEXT NOT NULL,
  spec       TEXT NOT NULL,              -- the normalized document, canonical JSON
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  version    INTEGER NOT NULL
);
-- One row per alert (instance of a rule), written at each transition
-- (pending, firing, resolved, keep_firing_for starting) in the unit that
-- also emits its alert.* event.  Resolved rows are deleted 15 minutes
-- after they resolved.
CREATE TABLE alert_instances (
  rule         TEXT NOT NULL,
  fingerprint  TEXT NOT NULL,            -- 16 hex: FNV-1a 64 of the sorted labels
  ikey         TEXT NOT NULL,            -- what identifies it for its rule (event rules:
                                         -- the subject or the `by` values; expr: fingerprint)
  path         TEXT NOT NULL,            -- the rule's policy path
  labels       TEXT NOT NULL,            -- canonical JSON object
  annotations  TEXT NOT NULL,            -- canonical JSON object, as rendered
  source       TEXT,                     -- event rules: the event's data.labels
  state        TEXT NOT NULL,            -- pending | firing | resolved
  active_since INTEGER NOT NULL,
  fired_at     INTEGER,
  resolved_at  INTEGER,
  keep_since   INTEGER,                  -- firing, condition gone: keep_firing_for runs from here
  value        TEXT,                     -- the sample value (shortest decimal), NULL: none
  last_eval    INTEGER NOT NULL,
  PRIMARY KEY (rule, fingerprint)
);
