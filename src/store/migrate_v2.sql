-- Schema version 2: decisions (classification, probes, branch) per episode.
ALTER TABLE episodes ADD COLUMN rule TEXT;
ALTER TABLE episodes ADD COLUMN severity TEXT;
ALTER TABLE episodes ADD COLUMN branch TEXT;
-- When the episode's probes and branches are evaluated again (NULL: never).
ALTER TABLE episodes ADD COLUMN next_evaluation_at INTEGER;
CREATE INDEX IF NOT EXISTS episodes_due ON episodes(next_evaluation_at) WHERE next_evaluation_at IS NOT NULL;

-- Every decision made about an episode, with its full trace (rule and matcher evidence,
-- probe results, branch evaluations, actions, page plan), append-only.
CREATE TABLE IF NOT EXISTS decisions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    episode_id TEXT NOT NULL,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    branch TEXT NOT NULL,
    changed INTEGER NOT NULL,
    trace TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_episode ON decisions(episode_id, seq);
