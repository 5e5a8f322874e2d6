-- No query reads the identity map by local id (the importer looks entries
-- up by source, type and source id, the primary key), so the index on
-- (type, local_id) only cost every import: on PostgreSQL about a tenth of
-- the server's CPU of writing the identity map.
DROP INDEX IF EXISTS import_identity_local;
