-- One payment ledger (docs/payments.md): every send to one of our accounts that the sidecar
-- knows of has exactly one row, keyed by its spent key `network:HASH`, in exactly one state.
-- It replaces the spent set + receipts (a consumed payment is a row in any state but owed with
-- a receipt) and the tagged mechanism's stray payments (rows in state owed).
CREATE TABLE IF NOT EXISTS payments (
    spent_key    TEXT PRIMARY KEY,
    receipt      TEXT UNIQUE,
    mechanism    TEXT NOT NULL CHECK (mechanism IN ('signed_block', 'tagged')),
    payer        TEXT NOT NULL,
    pay_to       TEXT NOT NULL,
    amount       TEXT NOT NULL,
    resource     TEXT NOT NULL,
    nonce        TEXT,
    state        TEXT NOT NULL CHECK (state IN ('admitted', 'served', 'redeemable', 'owed')),
    reason       TEXT,
    settled_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    lease_until  INTEGER NOT NULL DEFAULT 0,
    redemptions  INTEGER NOT NULL DEFAULT 0,
    -- Only an owed payment may lack a receipt (it never bought anything); owed says why.
    CHECK (state = 'owed' OR receipt IS NOT NULL),
    CHECK (state <> 'owed' OR reason IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS payments_state ON payments (state, updated_at);
CREATE INDEX IF NOT EXISTS payments_settled ON payments (settled_at, spent_key);
CREATE INDEX IF NOT EXISTS payments_payer ON payments (payer);

-- Old consumptions keep their meaning: a reported success is served, a reported failure (5xx,
-- or 0, which meant "timeout" before this migration) is redeemable, no report yet is admitted
-- with the lease the old outcome grace (120 s) gave it. The payee and resource were not kept.
INSERT INTO payments (spent_key, receipt, mechanism, payer, pay_to, amount, resource, nonce,
                      state, reason, settled_at, updated_at, lease_until, redemptions)
SELECT s.spent_key, s.receipt,
       CASE WHEN r.nonce IN (SELECT id FROM tagged_sessions) THEN 'tagged' ELSE 'signed_block' END,
       s.payer, '', s.amount, '', r.nonce,
       CASE WHEN r.outcome IS NULL THEN 'admitted'
            WHEN r.outcome = 0 OR r.outcome >= 500 THEN 'redeemable'
            ELSE 'served' END,
       NULL, s.consumed_at, r.admitted_at, r.admitted_at + 125, r.redemptions
FROM spent s JOIN receipts r ON r.receipt = s.receipt
WHERE true
ON CONFLICT (spent_key) DO NOTHING;
DROP TABLE receipts;
DROP TABLE spent;

-- Stray payments are keyed by the bare hash; the network is only known to the running
-- sidecar, which folds them into owed rows at start (Store::fold_legacy_strays).
ALTER TABLE stray_payments RENAME TO legacy_stray_payments;

-- Signed blocks whose confirmation outlasted the wait: tracked in the background (and after a
-- restart) until they confirm (then recorded redeemable) or the redemption window ends.
CREATE TABLE IF NOT EXISTS pending_settlements (
    spent_key    TEXT PRIMARY KEY,
    block        TEXT NOT NULL,
    payer        TEXT NOT NULL,
    pay_to       TEXT NOT NULL,
    amount       TEXT NOT NULL,
    resource     TEXT NOT NULL,
    nonce        TEXT,
    track_until  INTEGER NOT NULL
);

-- The terms a fork-set claim was made for (amount, payee, resource): a takeover must present
-- the same (a block claimed for a cheap resource never finishes an expensive one).
ALTER TABLE forks ADD COLUMN terms TEXT;
CREATE INDEX IF NOT EXISTS forks_block ON forks (block_hash);
