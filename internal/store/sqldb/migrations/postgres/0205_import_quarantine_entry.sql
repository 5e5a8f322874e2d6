-- The Bundle entry a quarantined item came from: 1 + its index in
-- Bundle.entry (0: not from a Bundle). A Bundle sent on one line, as
-- servers send them, has every entry on line 1, so the line alone does
-- not say which entry was rejected.
ALTER TABLE import_quarantine ADD COLUMN entry INTEGER NOT NULL DEFAULT 0;
