-- Metrics configuration (scraping), as applied with `keel apply -f` (kind:
-- ScrapeConfig).  The samples themselves live in the TSDB (DATA/tsdb), not
-- here.
CREATE TABLE metrics_config (
  name       TEXT PRIMARY KEY,           -- 'scrape'
  spec       TEXT NOT NULL,              -- the document, canonical JSON
  updated_ms INTEGER NOT NULL
);
