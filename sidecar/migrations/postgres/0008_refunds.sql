-- Refunds of owed payments (docs/refunds.md). Two payment states join the ledger:
--   refunding: the refund's send block is signed and recorded (below), maybe not yet on the
--              ledger; a restarted sidecar publishes the very same block again;
--   refunded:  the refund is confirmed on the ledger (signed here, or sent by the operator's
--              wallet and checked by `mark-refunded`).
-- The constraints keep the names PostgreSQL gave them in 0003.
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_state_check;
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_check;
ALTER TABLE payments DROP CONSTRAINT IF EXISTS payments_check1;
ALTER TABLE payments ADD CONSTRAINT payments_state_check
    CHECK (state IN ('admitted', 'served', 'redeemable', 'owed', 'refunding', 'refunded'));
-- Only an owed (or refunded) payment may lack a receipt; it keeps the reason it was owed.
ALTER TABLE payments ADD CONSTRAINT payments_check
    CHECK (state IN ('owed', 'refunding', 'refunded') OR receipt IS NOT NULL);
ALTER TABLE payments ADD CONSTRAINT payments_check1
    CHECK (state NOT IN ('owed', 'refunding', 'refunded') OR reason IS NOT NULL);

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
    created_at   BIGINT NOT NULL,
    confirmed_at BIGINT
);
