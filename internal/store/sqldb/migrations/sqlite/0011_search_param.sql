-- Index rows name their search parameter by a small integer: the id of
-- the (resource type, parameter code) pair in search_param, which the store
-- seeds with every standard pair when it opens and extends on first use
-- (sqldb/params.go). Two text columns fewer in every row and at the head of
-- every index key make the B-tree inserts of index rows, most of the cost
-- of a write, about half as costly. The indexes that select by parameter
-- lead with pid; idx_ref keeps leading with the target, which reverse
-- lookups (_has, _revinclude, exports) probe without a parameter.
--
-- Existing rows are converted: the registry takes every pair they use, and
-- each table is copied into its new form.
CREATE TABLE search_param (
  id    INTEGER PRIMARY KEY,
  type  TEXT    NOT NULL,
  param TEXT    NOT NULL,
  UNIQUE (type, param)
);
INSERT INTO search_param (type, param)
SELECT type, param FROM idx_token
  UNION SELECT type, param FROM idx_string
  UNION SELECT type, param FROM idx_date
  UNION SELECT type, param FROM idx_ref
  UNION SELECT type, param FROM idx_quantity
  UNION SELECT type, param FROM idx_number
  UNION SELECT type, param FROM idx_uri
  UNION SELECT type, param FROM idx_composite
  ORDER BY 1, 2;

CREATE TABLE idx_token_new (
  rid         INTEGER NOT NULL,
  pid         INTEGER NOT NULL,
  system      TEXT NOT NULL,
  code        TEXT NOT NULL,
  text        TEXT NOT NULL,
  type_system TEXT NOT NULL,
  type_code   TEXT NOT NULL
);
INSERT INTO idx_token_new (rid, pid, system, code, text, type_system, type_code)
  SELECT x.rid, p.id, x.system, x.code, x.text, x.type_system, x.type_code
  FROM idx_token x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_token;
ALTER TABLE idx_token_new RENAME TO idx_token;
CREATE INDEX idx_token_code ON idx_token (pid, code, system, rid);
CREATE INDEX idx_token_rid ON idx_token (rid, pid);

CREATE TABLE idx_string_new (
  rid   INTEGER NOT NULL,
  pid   INTEGER NOT NULL,
  norm  TEXT NOT NULL,
  exact TEXT NOT NULL
);
INSERT INTO idx_string_new (rid, pid, norm, exact)
  SELECT x.rid, p.id, x.norm, x.exact
  FROM idx_string x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_string;
ALTER TABLE idx_string_new RENAME TO idx_string;
CREATE INDEX idx_string_norm ON idx_string (pid, norm, rid);
CREATE INDEX idx_string_rid ON idx_string (rid);

CREATE TABLE idx_date_new (
  rid  INTEGER NOT NULL,
  low  INTEGER NOT NULL,
  high INTEGER NOT NULL,
  pid  INTEGER NOT NULL
);
INSERT INTO idx_date_new (rid, low, high, pid)
  SELECT x.rid, x.low, x.high, p.id
  FROM idx_date x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_date;
ALTER TABLE idx_date_new RENAME TO idx_date;
CREATE INDEX idx_date_low ON idx_date (pid, low);
CREATE INDEX idx_date_rid ON idx_date (rid);

CREATE TABLE idx_ref_new (
  rid         INTEGER NOT NULL,
  pid         INTEGER NOT NULL,
  target_type TEXT NOT NULL,
  target_id   TEXT NOT NULL,
  version     TEXT NOT NULL,
  url         TEXT NOT NULL,
  id_system   TEXT NOT NULL,
  id_value    TEXT NOT NULL
);
INSERT INTO idx_ref_new (rid, pid, target_type, target_id, version, url, id_system, id_value)
  SELECT x.rid, p.id, x.target_type, x.target_id, x.version, x.url, x.id_system, x.id_value
  FROM idx_ref x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_ref;
ALTER TABLE idx_ref_new RENAME TO idx_ref;
CREATE INDEX idx_ref_target ON idx_ref (target_id, target_type, pid, rid);
CREATE INDEX idx_ref_rid ON idx_ref (rid);

CREATE TABLE idx_quantity_new (
  rid    INTEGER NOT NULL,
  value  REAL NOT NULL,
  low    REAL NOT NULL,
  high   REAL NOT NULL,
  pid    INTEGER NOT NULL,
  text   TEXT NOT NULL,
  system TEXT NOT NULL,
  code   TEXT NOT NULL,
  unit   TEXT NOT NULL
);
INSERT INTO idx_quantity_new (rid, value, low, high, pid, text, system, code, unit)
  SELECT x.rid, x.value, x.low, x.high, p.id, x.text, x.system, x.code, x.unit
  FROM idx_quantity x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_quantity;
ALTER TABLE idx_quantity_new RENAME TO idx_quantity;
CREATE INDEX idx_quantity_value ON idx_quantity (pid, code, value);
CREATE INDEX idx_quantity_rid ON idx_quantity (rid);

CREATE TABLE idx_number_new (
  rid   INTEGER NOT NULL,
  value REAL NOT NULL,
  low   REAL NOT NULL,
  high  REAL NOT NULL,
  pid   INTEGER NOT NULL,
  text  TEXT NOT NULL
);
INSERT INTO idx_number_new (rid, value, low, high, pid, text)
  SELECT x.rid, x.value, x.low, x.high, p.id, x.text
  FROM idx_number x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_number;
ALTER TABLE idx_number_new RENAME TO idx_number;
CREATE INDEX idx_number_value ON idx_number (pid, value);
CREATE INDEX idx_number_rid ON idx_number (rid);

CREATE TABLE idx_uri_new (
  rid   INTEGER NOT NULL,
  pid   INTEGER NOT NULL,
  value TEXT NOT NULL
);
INSERT INTO idx_uri_new (rid, pid, value)
  SELECT x.rid, p.id, x.value
  FROM idx_uri x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_uri;
ALTER TABLE idx_uri_new RENAME TO idx_uri;
CREATE INDEX idx_uri_value ON idx_uri (pid, value, rid);
CREATE INDEX idx_uri_rid ON idx_uri (rid);

CREATE TABLE idx_composite_new (
  rid   INTEGER NOT NULL,
  pid   INTEGER NOT NULL,
  parts TEXT NOT NULL
);
INSERT INTO idx_composite_new (rid, pid, parts)
  SELECT x.rid, p.id, x.parts
  FROM idx_composite x JOIN search_param p ON p.type = x.type AND p.param = x.param;
DROP TABLE idx_composite;
ALTER TABLE idx_composite_new RENAME TO idx_composite;
CREATE INDEX idx_composite_param ON idx_composite (pid);
CREATE INDEX idx_composite_rid ON idx_composite (rid);
