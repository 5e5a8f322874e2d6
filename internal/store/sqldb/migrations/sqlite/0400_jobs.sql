-- Background jobs (bulk exports, long imports): a persisted queue claimed
-- by workers under a lease. Times are microseconds since the Unix epoch.
CREATE TABLE job (
  id           TEXT    PRIMARY KEY,
  kind         TEXT    NOT NULL,
  state        TEXT    NOT NULL,
  owner        TEXT    NOT NULL,
  params       BLOB    NOT NULL,
  worker       TEXT    NOT NULL DEFAULT '',
  lease_until  INTEGER NOT NULL DEFAULT 0,
  attempts     INTEGER NOT NULL DEFAULT 0,
  max_attempts INTEGER NOT NULL,
  progress     BLOB,
  result       BLOB,
  error        TEXT    NOT NULL DEFAULT '',
  created      INTEGER NOT NULL,
  updated      INTEGER NOT NULL,
  finished     INTEGER NOT NULL DEFAULT 0,
  expires      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX job_claim ON job (state, kind, created);
CREATE INDEX job_expires ON job (expires);

-- Files written by bulk exports, content-addressed by their CIDv1.
CREATE TABLE bulk_file (
  job      TEXT    NOT NULL,
  name     TEXT    NOT NULL,
  kind     TEXT    NOT NULL,
  type     TEXT    NOT NULL,
  blob_key TEXT    NOT NULL,
  count    INTEGER NOT NULL,
  size     INTEGER NOT NULL,
  cid      TEXT    NOT NULL,
  PRIMARY KEY (job, name)
);
CREATE INDEX bulk_file_cid ON bulk_file (cid);

-- The patients a patient-level export is confined to (Group members, the
-- patient parameter, a patient token's patient).
CREATE TABLE bulk_member (
  job     TEXT NOT NULL,
  patient TEXT NOT NULL,
  PRIMARY KEY (job, patient)
);

-- Exports walk the current resources of a type in rid order.
CREATE INDEX resource_type_rid ON resource (type, rid);
