-- Session registry: a challenge nonce is bound to the first payment presented with it.
CREATE TABLE IF NOT EXISTS sessions (
    nonce        TEXT PRIMARY KEY,
    payment_key  TEXT NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_expires ON sessions (expires_at);

-- Spent set: consumed block hashes keyed `network:HASH`. Never pruned.
CREATE TABLE IF NOT EXISTS spent (
    spent_key    TEXT PRIMARY KEY,
    receipt      TEXT NOT NULL UNIQUE,
    payer        TEXT NOT NULL,
    amount       TEXT NOT NULL,
    consumed_at  INTEGER NOT NULL
);

-- Fork set: one in-flight attempt per payer frontier (`network:ACCOUNT:PREVIOUS`).
CREATE TABLE IF NOT EXISTS forks (
    frontier_key TEXT PRIMARY KEY,
    block_hash   TEXT NOT NULL,
    nonce        TEXT,
    owner        TEXT NOT NULL,
    lease_until  INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS forks_expires ON forks (expires_at);

-- Receipts: what the filter reports about the upstream, and how often a payment was redeemed.
CREATE TABLE IF NOT EXISTS receipts (
    receipt      TEXT PRIMARY KEY,
    spent_key    TEXT NOT NULL,
    nonce        TEXT,
    outcome      INTEGER,
    redemptions  INTEGER NOT NULL DEFAULT 0,
    admitted_at  INTEGER NOT NULL,
    valid_before INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS receipts_spent ON receipts (spent_key);
