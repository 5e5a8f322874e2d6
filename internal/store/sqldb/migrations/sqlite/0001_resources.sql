-- Versioned resources: one row per version in resource_version; resource
-- points at the current one. Times are microseconds since the Unix epoch.
CREATE TABLE resource (
  rid          INTEGER PRIMARY KEY,
  type         TEXT    NOT NULL,
  id           TEXT    NOT NULL,
  version      INTEGER NOT NULL,
  seq          INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted      INTEGER NOT NULL DEFAULT 0,
  UNIQUE (type, id)
);

CREATE TABLE resource_version (
  seq          INTEGER PRIMARY KEY AUTOINCREMENT,
  rid          INTEGER NOT NULL,
  type         TEXT    NOT NULL,
  version      INTEGER NOT NULL,
  last_updated INTEGER NOT NULL,
  deleted      INTEGER NOT NULL DEFAULT 0,
  method       TEXT    NOT NULL,
  batch        INTEGER,
  blob         TEXT,
  json         BLOB,
  UNIQUE (rid, version)
);
CREATE INDEX resource_version_type_seq ON resource_version (type, seq);
CREATE INDEX resource_version_updated ON resource_version (last_updated);

-- Patient compartment membership of current versions.
CREATE TABLE compartment (
  patient TEXT    NOT NULL,
  rid     INTEGER NOT NULL,
  PRIMARY KEY (patient, rid)
) WITHOUT ROWID;
CREATE INDEX compartment_rid ON compartment (rid);

-- Search index entries of current versions, one table per parameter type.
CREATE TABLE idx_token (
  rid         INTEGER NOT NULL,
  type        TEXT    NOT NULL,
  param       TEXT    NOT NULL,
  system      TEXT    NOT NULL,
  code        TEXT    NOT NULL,
  text        TEXT    NOT NULL,
  type_system TEXT    NOT NULL,
  type_code   TEXT    NOT NULL
);
CREATE INDEX idx_token_code ON idx_token (type, param, code, system);
CREATE INDEX idx_token_rid ON idx_token (rid);

CREATE TABLE idx_string (
  rid   INTEGER NOT NULL,
  type  TEXT    NOT NULL,
  param TEXT    NOT NULL,
  norm  TEXT    NOT NULL,
  exact TEXT    NOT NULL
);
CREATE INDEX idx_string_norm ON idx_string (type, param, norm);
CREATE INDEX idx_string_rid ON idx_string (rid);

CREATE TABLE idx_date (
  rid   INTEGER NOT NULL,
  type  TEXT    NOT NULL,
  param TEXT    NOT NULL,
  low   INTEGER NOT NULL,
  high  INTEGER NOT NULL
);
CREATE INDEX idx_date_low ON idx_date (type, param, low);
CREATE INDEX idx_date_rid ON idx_date (rid);

CREATE TABLE idx_ref (
  rid         INTEGER NOT NULL,
  type        TEXT    NOT NULL,
  param       TEXT    NOT NULL,
  target_type TEXT    NOT NULL,
  target_id   TEXT    NOT NULL,
  version     TEXT    NOT NULL,
  url         TEXT    NOT NULL,
  id_system   TEXT    NOT NULL,
  id_value    TEXT    NOT NULL
);
CREATE INDEX idx_ref_target ON idx_ref (target_id, target_type, param, type);
CREATE INDEX idx_ref_rid ON idx_ref (rid);

CREATE TABLE idx_quantity (
  rid    INTEGER NOT NULL,
  type   TEXT    NOT NULL,
  param  TEXT    NOT NULL,
  value  REAL    NOT NULL,
  low    REAL    NOT NULL,
  high   REAL    NOT NULL,
  text   TEXT    NOT NULL,
  system TEXT    NOT NULL,
  code   TEXT    NOT NULL,
  unit   TEXT    NOT NULL
);
CREATE INDEX idx_quantity_value ON idx_quantity (type, param, code, value);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid);

CREATE TABLE idx_number (
  rid   INTEGER NOT NULL,
  type  TEXT    NOT NULL,
  param TEXT    NOT NULL,
  value REAL    NOT NULL,
  low   REAL    NOT NULL,
  high  REAL    NOT NULL,
  text  TEXT    NOT NULL
);
CREATE INDEX idx_number_value ON idx_number (type, param, value);
CREATE INDEX idx_number_rid ON idx_number (rid);

CREATE TABLE idx_uri (
  rid   INTEGER NOT NULL,
  type  TEXT    NOT NULL,
  param TEXT    NOT NULL,
  value TEXT    NOT NULL
);
CREATE INDEX idx_uri_value ON idx_uri (type, param, value);
CREATE INDEX idx_uri_rid ON idx_uri (rid);

-- Composite entries: the components of one match serialised as JSON.
CREATE TABLE idx_composite (
  rid   INTEGER NOT NULL,
  type  TEXT    NOT NULL,
  param TEXT    NOT NULL,
  parts TEXT    NOT NULL
);
CREATE INDEX idx_composite_param ON idx_composite (type, param);
CREATE INDEX idx_composite_rid ON idx_composite (rid);

-- Small server settings (signing keys...).
CREATE TABLE kv (
  key   TEXT PRIMARY KEY,
  value BLOB NOT NULL
);
