-- Schema version 5: whether an action helped, judged when its verify window has passed.
ALTER TABLE actions ADD COLUMN verify_window INTEGER NOT NULL DEFAULT 600000;
ALTER TABLE actions ADD COLUMN verify_at INTEGER;
-- helped (the incident had stopped firing), did_not_help (it still fired)
ALTER TABLE actions ADD COLUMN verified TEXT;
CREATE INDEX IF NOT EXISTS actions_verify ON actions(verify_at) WHERE verify_at IS NOT NULL AND verified IS NULL;
