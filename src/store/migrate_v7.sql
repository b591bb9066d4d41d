-- Schema version 7: debug bundles, one per incident.
CREATE TABLE IF NOT EXISTS bundles (
    episode_id TEXT PRIMARY KEY,
    -- The collectors rendered for the incident when it opened (JSON: requests and errors).
    plan TEXT NOT NULL,
    -- pending (to collect and write), written, final (rewritten after the incident closed),
    -- deleted (by retention)
    state TEXT NOT NULL,
    -- The incident closed: the bundle is to be rewritten with the final timeline.
    closed INTEGER NOT NULL DEFAULT 0,
    -- Relative to the state directory: bundles/YYYY-MM-DD/<incident>.tar.gz
    path TEXT,
    bytes INTEGER NOT NULL DEFAULT 0,
    -- Each collector's outcome (JSON array), and the most telling log lines (JSON array).
    collectors TEXT NOT NULL DEFAULT '[]',
    highlights TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL,
    written_at INTEGER,
    final_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS bundles_work ON bundles(state, closed);
