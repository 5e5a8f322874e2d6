-- Indexed text columns compare bytes (COLLATE "C"), as SQLite's BINARY
-- collation does and search's sorts already did, instead of through the
-- database's collation: with C.UTF-8 every B-tree comparison of two
-- different strings went through strcoll (varstr_cmp copies both into
-- NUL-terminated buffers first), about 2% of the server's CPU samples in
-- a Synthea import (which is mostly index inserts; what remains of their
-- comparisons is memcmp). Byte order is code point order for UTF-8, so
-- orders and ranges are those of C.UTF-8 and of SQLite. A string search's
-- prefix (norm LIKE 'abc%') now becomes a range of idx_string_norm rather
-- than a filter over every row of the parameter.
--
-- Columns compared with each other (resource.type/id with idx_ref's
-- target, compartment.patient, search_param with resource.type) all
-- change, so that a join's comparison has the collation of the index it
-- probes. Changing the collation of a text column does not rewrite the
-- table; the indexes that include it are rebuilt. The importer's tables
-- change in 0204.
ALTER TABLE resource
  ALTER COLUMN type TYPE TEXT COLLATE "C",
  ALTER COLUMN id TYPE TEXT COLLATE "C";
ALTER TABLE resource_version
  ALTER COLUMN type TYPE TEXT COLLATE "C";
ALTER TABLE compartment
  ALTER COLUMN patient TYPE TEXT COLLATE "C";
ALTER TABLE search_param
  ALTER COLUMN type TYPE TEXT COLLATE "C",
  ALTER COLUMN param TYPE TEXT COLLATE "C";
ALTER TABLE idx_token
  ALTER COLUMN system TYPE TEXT COLLATE "C",
  ALTER COLUMN code TYPE TEXT COLLATE "C";
ALTER TABLE idx_string
  ALTER COLUMN norm TYPE TEXT COLLATE "C";
ALTER TABLE idx_ref
  ALTER COLUMN target_type TYPE TEXT COLLATE "C",
  ALTER COLUMN target_id TYPE TEXT COLLATE "C";
ALTER TABLE idx_quantity
  ALTER COLUMN code TYPE TEXT COLLATE "C";
ALTER TABLE idx_uri
  ALTER COLUMN value TYPE TEXT COLLATE "C";
