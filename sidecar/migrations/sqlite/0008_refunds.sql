-- Refunds of owed payments (docs/refunds.md). Two payment states join the ledger:
--   refunding: the refund's send block is signed and recorded (below), maybe not yet on the
--              ledger; a restarted sidecar publishes the very same block again;
--   refunded:  the refund is confirmed on the ledger (signed here, or sent by the operator's
--              wallet and checked by `mark-refunded`).
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt with the same
-- columns, rows and indexes (the documented "make other kinds of table schema changes"
-- procedure; nothing references `payments`).
CREATE TABLE payments_0008 (
    spent_key    TEXT PRIMARY KEY,
    receipt      TEXT UNIQUE,
    mechanism    TEXT NOT NULL CHECK (mechanism IN ('signed_block', 'tagged')),
    payer        TEXT NOT NULL,
    pay_to       TEXT NOT NULL,
    amount       TEXT NOT NULL,
    resource     TEXT NOT NULL,
    nonce        TEXT,
    state        TEXT NOT NULL CHECK (state IN ('admitted', 'served', 'redeemable', 'owed',
                                                'refunding', 'refunded')),
    reason       TEXT,
    settled_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL DEFAULT 0,
    redemptions  INTEGER NOT NULL DEFAULT 0,
    admission_token TEXT,
    -- Only an owed (or refunded) payment may lack a receipt; it keeps the reason it was owed.
    CHECK (state IN ('owed', 'refunding', 'refunded') OR receipt IS NOT NULL),
    CHECK (state NOT IN ('owed', 'refunding', 'refunded') OR reason IS NOT NULL)
);
INSERT INTO payments_0008 (spent_key, receipt, mechanism, payer, pay_to, amount, resource, nonce,
                           state, reason, settled_at, updated_at, lease_until, redemptions,
                           admission_token)
SELECT spent_key, receipt, mechanism, payer, pay_to, amount, resource, nonce, state, reason,
       settled_at, updated_at, lease_until, redemptions, admission_token
FROM payments;
DROP TABLE payments;
ALTER TABLE payments_0008 RENAME TO payments;
CREATE INDEX IF NOT EXISTS payments_state ON payments (state, updated_at);
CREATE INDEX IF NOT EXISTS payments_settled ON payments (settled_at, spent_key);
CREATE INDEX IF NOT EXISTS payments_payer ON payments (payer);

-- One refund per owed payment, recorded before anything is published. `block` is the exact
-- signed send (nano-node JSON) for a refund the sidecar signs: republished as is after a crash
-- (same hash: the ledger takes an identical block once); NULL for a refund the operator's
-- wallet sent (`mark-refunded`). A block pays one refund only (`block_hash` UNIQUE).
CREATE TABLE IF NOT EXISTS refunds (
    spent_key    TEXT PRIMARY KEY,
    block_hash   TEXT NOT NULL UNIQUE,
    block        TEXT,
    source       TEXT NOT NULL,
    destination  TEXT NOT NULL,
    amount       TEXT NOT NULL,
    created_at   INTEGER NOT NULL,
    confirmed_at INTEGER
);
