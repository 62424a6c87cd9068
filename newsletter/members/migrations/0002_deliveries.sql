-- Deliveries: one row per (issue, subscriber), written before the first SMTP connection.
-- The queries live at the top of newsletter/ledger.py. States only move forward:
--
--   pending -> attempting -> sent | deferred | failed | unknown | expired
--   deferred -> attempting | expired;  unknown -> attempting (only with --retry-unknown)
--   pending | attempting | deferred | unknown -> suppressed   (checked just before each attempt)
--
-- A row left `attempting` by a killed run was in flight at the crash: it is resent with
-- the same Message-ID (at-least-once) and counted in `resent_after_crash`.

-- One row per issue sent: what was rendered, to which list, when the snapshot was taken.
CREATE TABLE sends (
    issue         TEXT PRIMARY KEY,       -- the issue slug
    list_name     TEXT NOT NULL,
    content_hash  TEXT NOT NULL,          -- RenderedIssue.content_hash at the snapshot
    subject       TEXT NOT NULL,
    created_at    REAL NOT NULL           -- unix time of the snapshot
) STRICT;

CREATE TABLE deliveries (
    id                    INTEGER PRIMARY KEY,
    issue                 TEXT NOT NULL REFERENCES sends (issue),
    subscriber_id         INTEGER NOT NULL,
    -- The recipient values at the snapshot: nothing else varies between messages.
    address               TEXT NOT NULL,
    greeting              TEXT NOT NULL,
    unsubscribe_url       TEXT NOT NULL,
    list_unsubscribe      TEXT NOT NULL,
    list_unsubscribe_post TEXT NOT NULL,
    message_id            TEXT NOT NULL,  -- stable for (issue, subscriber), reused on retries
    state                 TEXT NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'attempting', 'sent', 'deferred',
                                           'failed', 'unknown', 'suppressed', 'expired')),
    attempts              INTEGER NOT NULL DEFAULT 0,
    first_attempt_at      REAL,
    last_attempt_at       REAL,
    next_attempt_at       REAL,           -- deferred rows: not before this time
    sent_at               REAL,
    reply_code            INTEGER,
    enhanced_code         TEXT,
    reply_text            TEXT,           -- truncated server reply (queue id on success)
    stage                 TEXT,           -- where the last attempt ended: mail, rcpt, data, dot
    resent_after_crash    INTEGER NOT NULL DEFAULT 0,
    suppression_checked_at REAL,
    UNIQUE (issue, subscriber_id)
) STRICT;

CREATE INDEX deliveries_due ON deliveries (issue, state, id);
CREATE INDEX deliveries_sent_at ON deliveries (sent_at) WHERE sent_at IS NOT NULL;

-- At most one sending run at a time (any issue): provider limits are per account.
CREATE TABLE send_lock (
    name          TEXT PRIMARY KEY CHECK (name = 'send'),
    issue         TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    host          TEXT NOT NULL,
    token         TEXT NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
) STRICT;
