-- The organization as applied from documents (org engine): one row per
-- object, its normalized spec as canonical JSON.  kind: organization |
-- user | team | application | grant | policy | guardrail.  Users live in
-- the users table (iam); a 'user' row here only marks that a document
-- manages that user, so removing it from the document can be reported.
CREATE TABLE org_objects (
  kind       TEXT NOT NULL,
  name       TEXT NOT NULL,
  spec       TEXT NOT NULL,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL,
  version    INTEGER NOT NULL,
  PRIMARY KEY (kind, name)
);
