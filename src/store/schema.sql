-- nightshift store, schema version 1.
-- Times are milliseconds since the Unix epoch unless the column name says otherwise.

-- Raw webhook bodies, stored once however often Alertmanager re-sends the same snapshot.
CREATE TABLE IF NOT EXISTS payloads (
    hash BLOB PRIMARY KEY,
    body BLOB NOT NULL
) WITHOUT ROWID;

-- Every acknowledged webhook; the journal that reconcile works from.
CREATE TABLE IF NOT EXISTS notifications (
    id INTEGER PRIMARY KEY,
    received_at INTEGER NOT NULL,
    remote TEXT NOT NULL,
    group_key TEXT NOT NULL,
    payload_hash BLOB NOT NULL,
    alert_count INTEGER NOT NULL,
    reconciled_at INTEGER
);
CREATE INDEX IF NOT EXISTS notifications_unreconciled ON notifications(id) WHERE reconciled_at IS NULL;
CREATE INDEX IF NOT EXISTS notifications_payload ON notifications(payload_hash);

-- One row per alert episode, (fingerprint, starts_at); id is derived from that pair.
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY,
    fingerprint TEXT NOT NULL,
    starts_at TEXT NOT NULL,
    group_key TEXT NOT NULL,
    status TEXT NOT NULL,
    labels TEXT NOT NULL,
    annotations TEXT NOT NULL,
    generator_url TEXT NOT NULL,
    ends_at TEXT,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    status_changed_at INTEGER NOT NULL,
    closed_at INTEGER,
    first_notification INTEGER NOT NULL,
    api_absent_since INTEGER
);
CREATE INDEX IF NOT EXISTS episodes_status ON episodes(status, first_seen);

-- Which groups an open episode is a member of, for telling when it vanished from one.
CREATE TABLE IF NOT EXISTS episode_groups (
    group_key TEXT NOT NULL,
    episode_id TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    PRIMARY KEY (group_key, episode_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS episode_groups_episode ON episode_groups(episode_id);

-- Episode transitions, append-only; done_at IS NULL marks the durable queue of work.
CREATE TABLE IF NOT EXISTS transitions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    episode_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    notification_id INTEGER,
    detail TEXT NOT NULL,
    done_at INTEGER
);
CREATE INDEX IF NOT EXISTS transitions_pending ON transitions(seq) WHERE done_at IS NULL;
CREATE INDEX IF NOT EXISTS transitions_episode ON transitions(episode_id, seq);

CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
