-- Prepaid passes (docs/passes.md): one row per pass, bought by one payment (`payment`, the
-- ledger key `network:HASH`, unique: a payment re-admitted after a failed upstream call
-- answers the same pass). `requests_granted` is NULL for a time pass; `requests_used` is the
-- authoritative count the filters report; `exhausted_at` is set once it reaches the grant and
-- `revoked_at` by the operator. `key_id` is the pass key the token was minted under, so the
-- same token can be answered again.
CREATE TABLE IF NOT EXISTS passes (
    id               TEXT PRIMARY KEY,
    payment          TEXT NOT NULL UNIQUE,
    name             TEXT NOT NULL,
    group_name       TEXT NOT NULL,
    payer            TEXT NOT NULL,
    transaction_hash TEXT NOT NULL,
    key_id           INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL,
    requests_granted INTEGER,
    requests_used    INTEGER NOT NULL DEFAULT 0,
    exhausted_at     INTEGER,
    revoked_at       INTEGER
);
CREATE INDEX IF NOT EXISTS passes_by_created ON passes (created_at, id);
CREATE INDEX IF NOT EXISTS passes_by_expiry ON passes (expires_at);
