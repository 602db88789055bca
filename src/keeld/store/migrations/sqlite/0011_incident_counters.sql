-- Incidents whose handling costs the same however many alerts they hold
-- (src/keeld/incident/; docs/incidents.md): an event touches the incident
-- row and the one alert it is about, never every alert of the incident.

-- How many alerts an incident has and how many of them fire, kept by the
-- engine as alerts join, resolve and fire again.
ALTER TABLE incidents ADD COLUMN alerts_total INTEGER NOT NULL DEFAULT 0;
ALTER TABLE incidents ADD COLUMN alerts_firing INTEGER NOT NULL DEFAULT 0;
UPDATE incidents SET
  alerts_total = (SELECT COUNT(*) FROM incident_alerts a WHERE a.incident_id = incidents.id),
  alerts_firing = (SELECT COUNT(*) FROM incident_alerts a WHERE a.incident_id = incidents.id
                   AND a.state = 'firing');

-- The first few alerts of an incident (firing ones first, each in joining
-- order) for events and notifications, read without touching the others.
CREATE INDEX incident_alerts_order ON incident_alerts(incident_id, state, joined_ms, subject);

-- The hosts of live incidents' alerts: "agent_id=ID" and "instance=NAME"
-- keys, so an execution finds the incidents on its targets by key.  Rows
-- go when their incident resolves.
CREATE TABLE incident_hosts (
  host         TEXT NOT NULL,
  incident_id  TEXT NOT NULL REFERENCES incidents(id),
  PRIMARY KEY (host, incident_id)
) WITHOUT ROWID;
CREATE INDEX incident_hosts_incident ON incident_hosts(incident_id);
INSERT OR IGNORE INTO incident_hosts(host, incident_id)
  SELECT 'agent_id=' || a.agent_id, a.incident_id FROM incident_alerts a
  JOIN incidents i ON i.id = a.incident_id WHERE i.state <> 'resolved' AND a.agent_id <> ''
  UNION
  SELECT 'instance=' || a.instance, a.incident_id FROM incident_alerts a
  JOIN incidents i ON i.id = a.incident_id WHERE i.state <> 'resolved' AND a.instance <> '';
