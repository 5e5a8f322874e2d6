-- Indexes for search. The lists of resources a clause selects (by type,
-- parameter and value) are read from the index alone: rid is its last
-- column. Checks of one resource's token entries (EXISTS ... rid = ? AND
-- param = ?) seek straight to that parameter's rows. Wider per-resource
-- covering indexes made ingest slower than they made search faster.
DROP INDEX idx_token_code;
DROP INDEX idx_token_rid;
CREATE INDEX idx_token_code ON idx_token (type, param, code, system, rid);
CREATE INDEX idx_token_rid ON idx_token (rid, param);

DROP INDEX idx_string_norm;
CREATE INDEX idx_string_norm ON idx_string (type, param, norm, rid);

DROP INDEX idx_ref_target;
CREATE INDEX idx_ref_target ON idx_ref (target_id, target_type, param, type, rid);

DROP INDEX idx_uri_value;
CREATE INDEX idx_uri_value ON idx_uri (type, param, value, rid);
