-- Proofs: which rendered content of an issue was sent as a proof (`send --to`), and when.
-- No address is kept: the send confirmation only asks "was this exact content proofed?".
CREATE TABLE proofs (
    issue         TEXT NOT NULL,          -- the issue slug
    content_hash  TEXT NOT NULL,          -- RenderedIssue.content_hash of the proof
    sent_at       REAL NOT NULL,          -- unix time of the last proof of this content
    PRIMARY KEY (issue, content_hash)
) STRICT;
