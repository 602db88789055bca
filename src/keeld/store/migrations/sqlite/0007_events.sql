-- Events (event engine, src/keeld/event/; docs/events.md): every state
-- change in Keel as a CloudEvents object.  seq is assigned by keeld (never
-- reused while it runs, so a rolled-back event leaves a gap rather than a
-- number another event could take); the engine delivers events in seq
-- order once their generation is durable.  Rows older than the retention
-- (--event-retention, default 7d) are deleted by the hourly prune.
CREATE TABLE events (
  seq     INTEGER PRIMARY KEY,
  id      TEXT NOT NULL UNIQUE,          -- evt_<16 base32>
  source  TEXT NOT NULL,                 -- keeld | agent/<agent id>
  type    TEXT NOT NULL,                 -- agent.offline, alert.firing, ...
  subject TEXT NOT NULL DEFAULT '',
  time_ms INTEGER NOT NULL,
  path    TEXT NOT NULL,                 -- policy path, for event:read per item
  cause   TEXT NOT NULL DEFAULT '',      -- automation/NAME behind it, or ''
  data    TEXT NOT NULL                  -- JSON object, canonical
);
CREATE INDEX events_type ON events(type, seq);
CREATE INDEX events_subject ON events(subject, seq);
CREATE INDEX events_time ON events(time_ms);

-- How far delivery to the engines got (one row).  Written in the same
-- batch as what the engines did with those events, so after a crash the
-- events whose effects were lost are delivered again, and no others.
CREATE TABLE event_cursor (
  id  INTEGER PRIMARY KEY CHECK (id = 1),
  seq INTEGER NOT NULL
);
