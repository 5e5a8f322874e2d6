-- The importer reads the recorded identifiers of a local resource (type,
-- local id) when an incoming resource matches it by a business identifier,
-- to check that no other identifier of the same system contradicts the
-- match. The primary key leads with (type, system, value), so without this
-- index each such check read every identifier row of the type: a second
-- source matching thousands of resources made the import quadratic.
CREATE INDEX IF NOT EXISTS import_identifier_local ON import_identifier (type, local_id);
