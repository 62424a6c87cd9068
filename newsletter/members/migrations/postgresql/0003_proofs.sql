-- PostgreSQL: the same schema as ../0003_proofs.sql.
CREATE TABLE proofs (
    issue         TEXT NOT NULL,
    content_hash  TEXT NOT NULL,
    sent_at       DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (issue, content_hash)
);
