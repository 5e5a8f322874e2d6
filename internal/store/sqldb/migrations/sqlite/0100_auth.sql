-- Sign-in and authorization (internal/auth/authdb). Times are microseconds
-- since the Unix epoch. Codes, refresh tokens and sessions are stored only
-- as hashes of their secrets.
CREATE TABLE auth_client (
  id            TEXT    PRIMARY KEY,
  name          TEXT    NOT NULL,
  scope         TEXT    NOT NULL,
  jwks          TEXT    NOT NULL DEFAULT '',
  jwks_url      TEXT    NOT NULL DEFAULT '',
  redirect_uris TEXT    NOT NULL DEFAULT '',
  created       INTEGER NOT NULL
);

CREATE TABLE auth_user (
  id       TEXT    PRIMARY KEY,
  email    TEXT    NOT NULL UNIQUE,
  role     TEXT    NOT NULL,
  patient  TEXT    NOT NULL DEFAULT '',
  password TEXT    NOT NULL,
  created  INTEGER NOT NULL
);

CREATE TABLE auth_jti (
  client_id TEXT    NOT NULL,
  jti       TEXT    NOT NULL,
  expires   INTEGER NOT NULL,
  PRIMARY KEY (client_id, jti)
);
CREATE INDEX auth_jti_expires ON auth_jti (expires);

CREATE TABLE auth_code (
  hash         TEXT    PRIMARY KEY,
  client_id    TEXT    NOT NULL,
  user_id      TEXT    NOT NULL,
  redirect_uri TEXT    NOT NULL,
  scope        TEXT    NOT NULL,
  patient      TEXT    NOT NULL,
  challenge    TEXT    NOT NULL,
  expires      INTEGER NOT NULL,
  used         INTEGER NOT NULL DEFAULT 0
);

CREATE TABLE auth_refresh (
  hash      TEXT    PRIMARY KEY,
  client_id TEXT    NOT NULL,
  user_id   TEXT    NOT NULL,
  scope     TEXT    NOT NULL,
  patient   TEXT    NOT NULL,
  expires   INTEGER NOT NULL,
  revoked   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX auth_refresh_user ON auth_refresh (user_id);

CREATE TABLE auth_session (
  hash    TEXT    PRIMARY KEY,
  user_id TEXT    NOT NULL,
  csrf    TEXT    NOT NULL,
  expires INTEGER NOT NULL
);
CREATE INDEX auth_session_user ON auth_session (user_id);
