-- The importer's indexed text columns compare bytes (COLLATE "C"), like
-- the resource and index tables since 0013 (which see): their primary keys
-- are probed and extended for every resource an import reads or writes.
ALTER TABLE import_identity
  ALTER COLUMN source TYPE TEXT COLLATE "C",
  ALTER COLUMN type TYPE TEXT COLLATE "C",
  ALTER COLUMN source_id TYPE TEXT COLLATE "C",
  ALTER COLUMN local_id TYPE TEXT COLLATE "C";
ALTER TABLE import_seen
  ALTER COLUMN source TYPE TEXT COLLATE "C",
  ALTER COLUMN hash TYPE TEXT COLLATE "C";
ALTER TABLE import_identifier
  ALTER COLUMN type TYPE TEXT COLLATE "C",
  ALTER COLUMN system TYPE TEXT COLLATE "C",
  ALTER COLUMN value TYPE TEXT COLLATE "C",
  ALTER COLUMN local_id TYPE TEXT COLLATE "C";
ALTER TABLE import_conflict
  ALTER COLUMN type TYPE TEXT COLLATE "C",
  ALTER COLUMN local_id TYPE TEXT COLLATE "C";
