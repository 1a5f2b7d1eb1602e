-- Tagged-amount sessions (mechanism 2): issued by the sidecar, paid by a client-broadcast send
-- of exactly `amount` to `pay_to` (hex public key), consumed once.
CREATE TABLE IF NOT EXISTS tagged_sessions (
    id            TEXT PRIMARY KEY,
    pay_to        TEXT NOT NULL,
    amount        TEXT NOT NULL,
    scope         TEXT NOT NULL,
    issued_at     BIGINT NOT NULL,
    valid_before  BIGINT NOT NULL,
    paid_hash     TEXT,
    paid_at       BIGINT,
    consumed_hash TEXT,
    keep_until    BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS tagged_sessions_amount ON tagged_sessions (pay_to, amount);
CREATE INDEX IF NOT EXISTS tagged_sessions_keep ON tagged_sessions (keep_until);

-- The uniqueness of an open session's amount on its account, across replicas: one row per
-- (pay_to, amount), taken over only once the holder's session has expired.
CREATE TABLE IF NOT EXISTS tag_claims (
    pay_to      TEXT NOT NULL,
    amount      TEXT NOT NULL,
    session_id  TEXT NOT NULL,
    until_ts    BIGINT NOT NULL,
    PRIMARY KEY (pay_to, amount)
);

-- Payments to a session account that bought nothing: wrong amount, unknown, late, too early.
CREATE TABLE IF NOT EXISTS stray_payments (
    hash        TEXT PRIMARY KEY,
    pay_to      TEXT NOT NULL,
    amount      TEXT NOT NULL,
    payer       TEXT NOT NULL,
    reason      TEXT NOT NULL,
    session_id  TEXT,
    seen_at     BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS stray_payments_seen ON stray_payments (seen_at);
