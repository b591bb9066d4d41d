-- Schema version 4: changes held by incidents, undone when the last holder resolves.
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    target TEXT NOT NULL,
    -- What is held: "env:NAME" or "replicas".
    item TEXT NOT NULL,
    -- What nightshift set (JSON), and what was there before (JSON, per container for env).
    value TEXT NOT NULL,
    previous TEXT NOT NULL,
    action_id INTEGER NOT NULL,
    changed_at INTEGER NOT NULL,
    -- held, releasing (no holder left; revert after release_after), reverted, left (a human
    -- changed the value since: theirs wins)
    state TEXT NOT NULL,
    release_after INTEGER,
    result TEXT
);
CREATE UNIQUE INDEX IF NOT EXISTS holds_active ON holds(target, item) WHERE state IN ('held', 'releasing');
CREATE TABLE IF NOT EXISTS hold_owners (
    hold_id INTEGER NOT NULL,
    episode_id TEXT NOT NULL,
    PRIMARY KEY (hold_id, episode_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS hold_owners_episode ON hold_owners(episode_id);
