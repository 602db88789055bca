-- Incidents, notifications and maintenance windows (src/keeld/incident/;
-- docs/incidents.md).  The incident engine alone reads and writes these
-- tables; alerts reach it only as alert.* events.

-- One row per incident.  fingerprint = BLAKE2b of (team, application, group
-- labels): at most one live (open or acked) incident per fingerprint, so an
-- alert firing again joins the live one and, once that is resolved, opens a
-- new one.
CREATE TABLE incidents (
  id           TEXT PRIMARY KEY,             -- inc_<16 base32>
  fingerprint  TEXT NOT NULL,                -- 16 hex
  title        TEXT NOT NULL,
  team         TEXT NOT NULL,                -- owner team ('' when the alert named none)
  application  TEXT NOT NULL,                -- '' when none
  severity     TEXT NOT NULL,                -- the highest of its alerts'
  state        TEXT NOT NULL,                -- open | acked | resolved
  group_labels TEXT NOT NULL,                -- JSON object: the labels of the fingerprint
  opened_ms    INTEGER NOT NULL,
  acked_ms     INTEGER,
  acked_by     TEXT,
  resolved_ms  INTEGER,
  resolved_by  TEXT,
  updated_ms   INTEGER NOT NULL,
  -- notifications: the route chosen at opening (JSON {"policy", "route",
  -- "steps": [...]} with each step's channels resolved, or null when no
  -- route matched), the next escalation step and when it is due (NULL: none)
  route        TEXT,
  esc_step     INTEGER NOT NULL DEFAULT 0,
  esc_due_ms   INTEGER,
  transitions  INTEGER NOT NULL DEFAULT 0,   -- notifying transitions so far (firing#N)
  tl_seq       INTEGER NOT NULL DEFAULT 0    -- last timeline seq
);
CREATE UNIQUE INDEX incidents_live ON incidents(fingerprint) WHERE state <> 'resolved';
CREATE INDEX incidents_opened ON incidents(opened_ms, id);
CREATE INDEX incidents_esc ON incidents(esc_due_ms) WHERE esc_due_ms IS NOT NULL;

-- The alerts of an incident, by alert subject "<rule>/<fingerprint>".
CREATE TABLE incident_alerts (
  incident_id  TEXT NOT NULL REFERENCES incidents(id),
  subject      TEXT NOT NULL,
  rule         TEXT NOT NULL,
  state        TEXT NOT NULL,                -- firing | resolved
  severity     TEXT NOT NULL,
  labels       TEXT NOT NULL,                -- JSON object
  annotations  TEXT NOT NULL,                -- JSON object
  value        TEXT,                         -- JSON number or null
  agent_id     TEXT NOT NULL DEFAULT '',     -- labels.agent_id (related events)
  instance     TEXT NOT NULL DEFAULT '',     -- labels.instance
  starts_ms    INTEGER NOT NULL,
  ends_ms      INTEGER,
  joined_ms    INTEGER NOT NULL,
  PRIMARY KEY (incident_id, subject)
);
CREATE INDEX incident_alerts_subject ON incident_alerts(subject);

-- What happened to an incident, in order.
CREATE TABLE incident_timeline (
  incident_id  TEXT NOT NULL REFERENCES incidents(id),
  seq          INTEGER NOT NULL,
  time_ms      INTEGER NOT NULL,
  kind         TEXT NOT NULL,                -- opened, alert.firing, alert.resolved, comment, acked, ...
  actor        TEXT NOT NULL DEFAULT '',
  text         TEXT NOT NULL DEFAULT '',
  data         TEXT,                         -- JSON object or NULL
  PRIMARY KEY (incident_id, seq)
);

-- The outbox: one row per notification to send, written in the unit of the
-- transition it tells of.  The UNIQUE key makes queueing the same
-- transition twice impossible, across restarts too.  The sender moves rows
-- from pending to sent or failed; suppressed rows were never to be sent.
CREATE TABLE notification_outbox (
  id           TEXT PRIMARY KEY,             -- ntf_<16 base32>; X-Keel-Notification-Id
  incident_id  TEXT NOT NULL REFERENCES incidents(id),
  transition   TEXT NOT NULL,                -- firing#N | resolved
  step         INTEGER NOT NULL,             -- escalation step that reached the channel
  channel      TEXT NOT NULL,
  policy       TEXT NOT NULL,                -- the NotificationPolicy ('' = global)
  type         TEXT NOT NULL,                -- webhook | alertmanager
  url          TEXT NOT NULL,                -- where to POST (resolved at queue time)
  headers      TEXT NOT NULL,                -- JSON object
  timeout_ms   INTEGER NOT NULL,
  body         TEXT NOT NULL,                -- the payload, built at queue time
  status       TEXT NOT NULL,                -- pending | sent | failed | suppressed
  attempts     INTEGER NOT NULL DEFAULT 0,
  next_ms      INTEGER NOT NULL,             -- next attempt (pending)
  last_error   TEXT NOT NULL DEFAULT '',
  maint_window TEXT NOT NULL DEFAULT '',     -- the maintenance window (suppressed)
  created_ms   INTEGER NOT NULL,
  done_ms      INTEGER,
  UNIQUE (incident_id, transition, step, channel)
);
CREATE INDEX notification_outbox_due ON notification_outbox(next_ms) WHERE status = 'pending';

-- Applied NotificationPolicy documents: one per team, '' for the global one.
CREATE TABLE notification_policies (
  team         TEXT PRIMARY KEY,
  spec         TEXT NOT NULL,                -- normalized document, canonical JSON
  created_ms   INTEGER NOT NULL,
  updated_ms   INTEGER NOT NULL,
  version      INTEGER NOT NULL
);

-- Applied MaintenanceWindow documents.
CREATE TABLE maintenance_windows (
  name         TEXT PRIMARY KEY,
  team         TEXT NOT NULL,
  spec         TEXT NOT NULL,                -- normalized document, canonical JSON
  created_ms   INTEGER NOT NULL,
  updated_ms   INTEGER NOT NULL,
  version      INTEGER NOT NULL
);
