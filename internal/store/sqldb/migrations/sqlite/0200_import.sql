-- Import and merge (internal/importer). Times are microseconds since the
-- Unix epoch.

-- One row per import (the "commit"): who, from where, what it did.
CREATE TABLE import_batch (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  source    TEXT    NOT NULL,
  filename  TEXT    NOT NULL DEFAULT '',
  mode      TEXT    NOT NULL DEFAULT 'merge',
  subject   TEXT    NOT NULL DEFAULT '',
  patient   TEXT    NOT NULL DEFAULT '',
  started   INTEGER NOT NULL,
  finished  INTEGER NOT NULL DEFAULT 0,
  status    TEXT    NOT NULL DEFAULT 'running',
  created   INTEGER NOT NULL DEFAULT 0,
  updated   INTEGER NOT NULL DEFAULT 0,
  unchanged INTEGER NOT NULL DEFAULT 0,
  conflicts INTEGER NOT NULL DEFAULT 0,
  rejected  INTEGER NOT NULL DEFAULT 0
);

-- Identity map: a source's (type, id) -> the local id, with the source's
-- version metadata of the last version taken from it.
CREATE TABLE import_identity (
  source      TEXT NOT NULL,
  type        TEXT NOT NULL,
  source_id   TEXT NOT NULL,
  local_id    TEXT NOT NULL,
  src_version TEXT NOT NULL DEFAULT '',
  src_updated TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (source, type, source_id)
) WITHOUT ROWID;
CREATE INDEX import_identity_local ON import_identity (type, local_id);

-- Content digests of what each source sent (canonical JSON as received):
-- an exact duplicate of anything a source sent before is a no-op, even when
-- a later version from it is current.
CREATE TABLE import_seen (
  source TEXT NOT NULL,
  hash   TEXT NOT NULL,
  PRIMARY KEY (source, hash)
) WITHOUT ROWID;

-- Business identifiers of imported resources, for matching the same
-- clinical fact arriving from another source.
CREATE TABLE import_identifier (
  type     TEXT NOT NULL,
  system   TEXT NOT NULL,
  value    TEXT NOT NULL,
  local_id TEXT NOT NULL,
  PRIMARY KEY (type, system, value, local_id)
) WITHOUT ROWID;

-- Incoming versions that disagree with the current one, kept whole until
-- someone resolves them.
CREATE TABLE import_conflict (
  id               INTEGER PRIMARY KEY AUTOINCREMENT,
  batch            INTEGER NOT NULL,
  type             TEXT    NOT NULL,
  local_id         TEXT    NOT NULL,
  source           TEXT    NOT NULL,
  line             INTEGER NOT NULL DEFAULT 0,
  hash             TEXT    NOT NULL,
  incoming         BLOB    NOT NULL,
  current_version  INTEGER NOT NULL,
  current_source   TEXT    NOT NULL DEFAULT '',
  status           TEXT    NOT NULL DEFAULT 'open',
  resolution       TEXT    NOT NULL DEFAULT '',
  resolved_version INTEGER NOT NULL DEFAULT 0,
  created          INTEGER NOT NULL,
  resolved         INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX import_conflict_resource ON import_conflict (type, local_id);
CREATE INDEX import_conflict_status ON import_conflict (status, id);

-- Rejected input, kept verbatim with the reasons.
CREATE TABLE import_quarantine (
  id     INTEGER PRIMARY KEY AUTOINCREMENT,
  batch  INTEGER NOT NULL,
  file   TEXT    NOT NULL DEFAULT '',
  line   INTEGER NOT NULL,
  reason TEXT    NOT NULL,
  text   BLOB    NOT NULL
);
CREATE INDEX import_quarantine_batch ON import_quarantine (batch, id);

CREATE INDEX resource_version_batch ON resource_version (batch) WHERE batch IS NOT NULL;
