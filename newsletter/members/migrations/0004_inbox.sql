-- What comes back after sending (newsletter inbox): late bounces, complaints, emailed
-- unsubscribes. The queries live in newsletter/members/store.py and
-- newsletter/delivery/ledger.py.
--
-- Two states are added, so two tables are rebuilt (SQLite cannot change a CHECK):
--   memberships.status  + 'complained' (a spam complaint: suppressed on every list)
--   deliveries.state    + 'bounced'    (sent, then a bounce report came back: sent -> bounced)
-- and each delivery keeps its envelope sender, which names it without the address.

CREATE TABLE memberships_new (
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    list_id       INTEGER NOT NULL REFERENCES lists (id),
    status        TEXT NOT NULL
                  CHECK (status IN ('subscribed', 'unsubscribed', 'bounced', 'removed',
                                    'complained')),
    changed_at    TEXT NOT NULL,
    reason        TEXT,
    PRIMARY KEY (subscriber_id, list_id)
) STRICT, WITHOUT ROWID;

INSERT INTO memberships_new (subscriber_id, list_id, status, changed_at, reason)
SELECT subscriber_id, list_id, status, changed_at, reason FROM memberships;

DROP TABLE memberships;
ALTER TABLE memberships_new RENAME TO memberships;
CREATE INDEX memberships_list ON memberships (list_id, status, subscriber_id);

CREATE TABLE deliveries_new (
    id                    INTEGER PRIMARY KEY,
    issue                 TEXT NOT NULL REFERENCES sends (issue),
    subscriber_id         INTEGER NOT NULL,
    address               TEXT NOT NULL,
    greeting              TEXT NOT NULL,
    unsubscribe_url       TEXT NOT NULL,
    list_unsubscribe      TEXT NOT NULL,
    list_unsubscribe_post TEXT NOT NULL,
    message_id            TEXT NOT NULL,
    state                 TEXT NOT NULL DEFAULT 'pending'
                          CHECK (state IN ('pending', 'attempting', 'sent', 'deferred',
                                           'failed', 'unknown', 'suppressed', 'expired',
                                           'bounced')),
    attempts              INTEGER NOT NULL DEFAULT 0,
    first_attempt_at      REAL,
    last_attempt_at       REAL,
    next_attempt_at       REAL,
    sent_at               REAL,
    reply_code            INTEGER,
    enhanced_code         TEXT,
    reply_text            TEXT,
    stage                 TEXT,           -- mail, rcpt, data, dot; 'report' for a late bounce
    resent_after_crash    INTEGER NOT NULL DEFAULT 0,
    suppression_checked_at REAL,
    -- The envelope sender (bounces+<token>@domain), '' for the network's own address;
    -- return_token is its token, the key a bounce report is matched by.
    return_path           TEXT NOT NULL DEFAULT '',
    return_token          TEXT,
    UNIQUE (issue, subscriber_id)
) STRICT;

INSERT INTO deliveries_new (id, issue, subscriber_id, address, greeting, unsubscribe_url,
    list_unsubscribe, list_unsubscribe_post, message_id, state, attempts, first_attempt_at,
    last_attempt_at, next_attempt_at, sent_at, reply_code, enhanced_code, reply_text, stage,
    resent_after_crash, suppression_checked_at)
SELECT id, issue, subscriber_id, address, greeting, unsubscribe_url, list_unsubscribe,
    list_unsubscribe_post, message_id, state, attempts, first_attempt_at, last_attempt_at,
    next_attempt_at, sent_at, reply_code, enhanced_code, reply_text, stage,
    resent_after_crash, suppression_checked_at
FROM deliveries;

DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;
CREATE INDEX deliveries_due ON deliveries (issue, state, id);
CREATE INDEX deliveries_sent_at ON deliveries (sent_at) WHERE sent_at IS NOT NULL;
CREATE INDEX deliveries_return_token ON deliveries (return_token)
    WHERE return_token IS NOT NULL;
CREATE INDEX deliveries_message_id ON deliveries (message_id);

-- Every message `newsletter inbox` has dealt with, by the sha256 of its bytes: each is
-- handled once, however often the mailbox is read.
CREATE TABLE inbox_messages (
    fingerprint   TEXT PRIMARY KEY,
    kind          TEXT NOT NULL,          -- bounce, soft, complaint, unsubscribe, auto-reply,
                                          -- person, ignored
    handled_at    REAL NOT NULL
) STRICT;

-- What a report said about one delivery (soft bounces are counted from here).
CREATE TABLE feedback (
    id            INTEGER PRIMARY KEY,
    delivery_id   INTEGER NOT NULL,
    issue         TEXT NOT NULL,
    subscriber_id INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('bounce', 'soft', 'complaint', 'unsubscribe')),
    status        TEXT,                   -- the reported status: 5.1.1, 4.2.2; abuse
    diagnostic    TEXT,                   -- truncated
    at            REAL NOT NULL,
    fingerprint   TEXT NOT NULL           -- the inbox message it came in
) STRICT;

CREATE INDEX feedback_member ON feedback (subscriber_id, kind);
CREATE INDEX feedback_issue ON feedback (issue, kind);
