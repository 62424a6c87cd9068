-- One issue, several lists (newsletter send ISSUE --list a --list b). The ledger still
-- holds one row per (issue, subscriber): a person on two lists gets the issue once. Each
-- row now knows the list it came through, since its unsubscribe link and the suppression
-- check before each attempt are that list's; and every list an issue went to is recorded,
-- so that sending it to another list later adds rows only for people without one.
-- The queries live in newsletter/delivery/ledger.py.

ALTER TABLE deliveries ADD COLUMN list_name TEXT NOT NULL DEFAULT '';

UPDATE deliveries
SET list_name = (SELECT s.list_name FROM sends s WHERE s.issue = deliveries.issue);

-- sends.list_name stays: the list the send started with.
CREATE TABLE send_lists (
    issue         TEXT NOT NULL REFERENCES sends (issue),
    list_name     TEXT NOT NULL,
    added_at      REAL NOT NULL,          -- unix time its rows were written
    PRIMARY KEY (issue, list_name)
) STRICT;                                -- rowid: the order lists were added in

INSERT INTO send_lists (issue, list_name, added_at)
SELECT issue, list_name, created_at FROM sends;
