-- Several senders on one send (PostgreSQL; the tables are here too so that both engines
-- keep one schema). The queries live in newsletter/delivery/ledger.py.
--
-- Each `newsletter send` process on a PostgreSQL database is a row of `senders`, alive
-- while its heartbeat is younger than the lease. It claims batches of due rows
-- (deliveries.claimed_by) and only a row it claimed is ever marked attempting by it; the
-- rows of a sender whose lease ran out are claimed by another (an `attempting` one was in
-- flight at the kill: resent with the same Message-ID). Each message started takes a
-- permit (send_permits.at, the same time as the row's last_attempt_at): the per-second,
-- -minute, -hour and -day limits are counted there, for all senders together.

CREATE TABLE senders (
    id            INTEGER PRIMARY KEY,
    issue         TEXT NOT NULL,
    host          TEXT NOT NULL,
    pid           INTEGER NOT NULL,
    started_at    REAL NOT NULL,
    heartbeat_at  REAL NOT NULL
) STRICT;

ALTER TABLE deliveries ADD COLUMN claimed_by INTEGER;
CREATE INDEX deliveries_claimed ON deliveries (claimed_by) WHERE claimed_by IS NOT NULL;

CREATE TABLE send_permits (
    at            REAL NOT NULL
) STRICT;
CREATE INDEX send_permits_at ON send_permits (at);
