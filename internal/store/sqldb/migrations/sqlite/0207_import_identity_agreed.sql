-- The local version that each source's last version was written as, or
-- was found to say exactly (another source's version, or the record's own
-- with the same content); empty when the source's last version was a
-- conflict or said less. A newer version from the source then updates the
-- resource while that version is current, as a branch that was level with
-- another fast-forwards, instead of being a conflict with what the source
-- itself agreed to.
ALTER TABLE import_identity ADD COLUMN agreed TEXT NOT NULL DEFAULT '';
