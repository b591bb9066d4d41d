-- Schema version 6: paging.
-- Per incident: whether it is paged, why, and under which page (dedup key).
CREATE TABLE IF NOT EXISTS incident_pages (
    episode_id TEXT PRIMARY KEY,
    dedup_key TEXT NOT NULL,
    group_key TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    -- immediate, after_verify, never
    policy TEXT NOT NULL,
    -- waiting (after_verify: until its mitigation is judged), paged, not_paged, resolved
    state TEXT NOT NULL,
    reason TEXT NOT NULL,
    -- Extra notifier channels of its severity ("slack:ops"), JSON array.
    channels TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    -- The act stage finished with this incident's decision (after_verify waits for it).
    acted INTEGER NOT NULL DEFAULT 0,
    paged_at INTEGER,
    closed_at INTEGER
);
CREATE INDEX IF NOT EXISTS incident_pages_dedup ON incident_pages(dedup_key, state);
CREATE INDEX IF NOT EXISTS incident_pages_waiting ON incident_pages(created_at) WHERE state = 'waiting';

-- One row per page (dedup key). The routing key is fixed when its first trigger is sent, so
-- every later event of the page goes to the same PagerDuty integration.
CREATE TABLE IF NOT EXISTS pages (
    dedup_key TEXT PRIMARY KEY,
    group_key TEXT NOT NULL,
    -- The rule of its first paged incident, for choosing the routing key.
    rule TEXT NOT NULL,
    -- The highest severity of its paged incidents.
    severity TEXT NOT NULL,
    routing_key TEXT,
    -- triggered, resolved
    status TEXT NOT NULL,
    triggered_at INTEGER NOT NULL,
    resolved_at INTEGER
) WITHOUT ROWID;

-- The durable outbox: every event to deliver, written in the transaction that decided it.
-- The content is built from the store when it is sent, so a late page tells the latest truth.
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    -- pagerduty, or a notifier: "slack:<name>", "webhook:<name>"
    channel TEXT NOT NULL,
    -- trigger, resolve, change
    kind TEXT NOT NULL,
    dedup_key TEXT,
    episode_id TEXT,
    action_id INTEGER,
    -- Lower goes first: 1-4 triggers by severity, 5 resolves, 6 change events.
    priority INTEGER NOT NULL,
    -- pending, delivered, rejected, cancelled
    state TEXT NOT NULL,
    -- Why it was written ("fallback: PagerDuty answered 400", "P1 pages immediately").
    reason TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    first_failure_at INTEGER,
    last_error TEXT,
    fallback_at INTEGER,
    delivered_at INTEGER,
    -- The event as last sent, routing key masked.
    sent TEXT
);
CREATE INDEX IF NOT EXISTS outbox_pending ON outbox(priority, id) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS outbox_dedup ON outbox(dedup_key, id);
CREATE INDEX IF NOT EXISTS outbox_episode ON outbox(episode_id);
