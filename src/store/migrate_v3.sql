-- Schema version 3: automatic actions, at most once each, with the governor's verdict.
CREATE TABLE IF NOT EXISTS actions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- Idempotency key: incident, rule, action, target. Unique: an action is planned once.
    key TEXT NOT NULL UNIQUE,
    episode_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    action TEXT NOT NULL,
    kind TEXT NOT NULL,
    target TEXT NOT NULL,
    -- run, hold, dry_run, paused, in_flight, cooldown, budget, did_not_help
    verdict TEXT NOT NULL,
    verdict_detail TEXT NOT NULL,
    -- The rendered arguments as shown (secrets redacted).
    arguments TEXT NOT NULL,
    -- planned, started, done, failed, not_applied, uncertain, skipped
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    started_at INTEGER,
    finished_at INTEGER,
    result TEXT
);
CREATE INDEX IF NOT EXISTS actions_target ON actions(target, kind, created_at);
CREATE INDEX IF NOT EXISTS actions_episode ON actions(episode_id, id);
CREATE INDEX IF NOT EXISTS actions_open ON actions(state) WHERE state IN ('planned', 'started');

-- The kill switch: one row while automatic actions are paused.
CREATE TABLE IF NOT EXISTS pause (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    until_at INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL
);
