-- How many resources a batch deleted (a transaction Bundle's DELETE
-- entries, a Bulk Data export's deleted[] on pull): phr log and
-- $import-batches showed the other counts but not this one.
ALTER TABLE import_batch ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
-- Earlier batches: their deletions are the tombstones they wrote.
UPDATE import_batch SET deleted = (SELECT COUNT(*) FROM resource_version v WHERE v.batch = import_batch.id AND v.deleted);
