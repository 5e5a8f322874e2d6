-- SMART Health Links (internal/shl). Times are microseconds since the Unix
-- epoch; 0 means "none". Secrets are never stored in the clear: the
-- manifest and location ids are kept as SHA-256 hashes, passcodes as
-- argon2id hashes, and the content key only for L links, wrapped with the
-- key-encryption key kept in kv under "shl/kek".
CREATE TABLE shl_link (
  id            TEXT    PRIMARY KEY,
  manifest_hash TEXT    NOT NULL UNIQUE,
  patient       TEXT    NOT NULL,
  owner         TEXT    NOT NULL,
  owner_scope   TEXT    NOT NULL,
  label         TEXT    NOT NULL,
  flags         TEXT    NOT NULL,
  passcode_hash TEXT    NOT NULL,
  attempts_left INTEGER NOT NULL,
  expires       INTEGER NOT NULL,
  revoked       INTEGER NOT NULL DEFAULT 0,
  created       INTEGER NOT NULL,
  updated       INTEGER NOT NULL,
  wrapped_key   BLOB,
  fingerprint   TEXT    NOT NULL
);
CREATE INDEX shl_link_patient ON shl_link (patient);

-- One row per file of a link; jwe is the current encryption.
CREATE TABLE shl_file (
  link_id      TEXT    NOT NULL,
  n            INTEGER NOT NULL,
  content_type TEXT    NOT NULL,
  selection    TEXT    NOT NULL,
  jwe          TEXT    NOT NULL,
  last_updated INTEGER NOT NULL,
  PRIMARY KEY (link_id, n)
);

-- Short-lived, unauthenticated download URLs handed out in manifests.
CREATE TABLE shl_location (
  token_hash TEXT    PRIMARY KEY,
  link_id    TEXT    NOT NULL,
  n          INTEGER NOT NULL,
  recipient  TEXT    NOT NULL,
  expires    INTEGER NOT NULL
);
CREATE INDEX shl_location_expires ON shl_location (expires);

-- Last manifest request per link and recipient (polling limit of L links).
CREATE TABLE shl_poll (
  link_id   TEXT    NOT NULL,
  recipient TEXT    NOT NULL,
  last      INTEGER NOT NULL,
  PRIMARY KEY (link_id, recipient)
);

-- Every access by a recipient, for the owner.
CREATE TABLE shl_access (
  id        INTEGER PRIMARY KEY AUTOINCREMENT,
  link_id   TEXT    NOT NULL,
  at        INTEGER NOT NULL,
  recipient TEXT    NOT NULL,
  action    TEXT    NOT NULL,
  status    INTEGER NOT NULL,
  detail    TEXT    NOT NULL
);
CREATE INDEX shl_access_link ON shl_access (link_id, id);
