-- Schema version 8: the outbox send is write-ahead. Before the delivery worker sends a round of
-- events it records, in one transaction, when it started sending each; a kill -9 before the
-- answers are recorded leaves that time behind, so the rate limiter seeded at the next start
-- counts those events as sent then.
ALTER TABLE outbox ADD COLUMN sending_at INTEGER;
