-- Members: subscribers, lists, memberships, consent evidence and the suppression list.
-- The queries live at the top of newsletter/members.py. Subscriber rows are never deleted
-- (the delivery ledger refers to subscribers.id); removing a member erases the personal
-- fields and keeps only the salted hash of the address in the suppression list.

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT;

-- Created once, at random, with the database: the salt of every suppression hash.
INSERT INTO meta (key, value) VALUES ('suppression_salt', lower(hex(randomblob(32))));

CREATE TABLE subscribers (
    id           INTEGER PRIMARY KEY,
    email        TEXT UNIQUE,            -- normalised; NULL once removed
    email_hash   TEXT,                   -- salted sha256 of email; NULL once removed
    name         TEXT,
    organisation TEXT,
    extra        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(extra)),  -- other CSV columns
    uid          TEXT NOT NULL UNIQUE DEFAULT (lower(hex(randomblob(16)))),  -- opaque, 128 bits
    created_at   TEXT NOT NULL
) STRICT;

CREATE INDEX subscribers_email_hash ON subscribers (email_hash);

CREATE TABLE lists (
    id         INTEGER PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
) STRICT;

CREATE TABLE memberships (
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    list_id       INTEGER NOT NULL REFERENCES lists (id),
    status        TEXT NOT NULL
                  CHECK (status IN ('subscribed', 'unsubscribed', 'bounced', 'removed')),
    changed_at    TEXT NOT NULL,
    reason        TEXT,
    PRIMARY KEY (subscriber_id, list_id)
) STRICT, WITHOUT ROWID;

CREATE INDEX memberships_list ON memberships (list_id, status, subscriber_id);

CREATE TABLE consent (
    id            INTEGER PRIMARY KEY,
    subscriber_id INTEGER NOT NULL REFERENCES subscribers (id),
    list_id       INTEGER NOT NULL REFERENCES lists (id),
    source        TEXT NOT NULL,          -- where and how: "network sign-up form"
    date          TEXT,                   -- when it was given (YYYY-MM-DD), if known
    basis         TEXT NOT NULL,          -- lawful basis: "consent", "legitimate interests"
    recorded_at   TEXT NOT NULL
) STRICT;

CREATE INDEX consent_member ON consent (subscriber_id, list_id);

CREATE TABLE suppression (
    hash    TEXT NOT NULL,                -- salted sha256 of the normalised address
    list_id INTEGER REFERENCES lists (id),  -- NULL: every list
    reason  TEXT NOT NULL,                -- unsubscribed, bounced, removed
    at      TEXT NOT NULL
) STRICT;

CREATE UNIQUE INDEX suppression_scope ON suppression (hash, ifnull(list_id, 0));
