-- A running import batch records which process runs it (owner:
-- "host pid start") and when it last showed life (heartbeat, microseconds
-- since the epoch). A batch still "running" whose process is gone, or
-- whose heartbeat has stopped, is marked "interrupted". Batches stored
-- before this migration have heartbeat 0, so one left "running" by a
-- killed server is marked interrupted at the next start.
ALTER TABLE import_batch ADD COLUMN owner TEXT NOT NULL DEFAULT '';
ALTER TABLE import_batch ADD COLUMN heartbeat BIGINT NOT NULL DEFAULT 0;
