-- Catching up from the ledger: per watched payee account, the last block of the account's own
-- chain whose receives were fed to the confirmation handler (`head`, NULL until the first
-- pass), and since when sends to the account count (older history is not ours to judge).
CREATE TABLE IF NOT EXISTS reconcile_cursors (
    account     TEXT PRIMARY KEY,
    head        TEXT,
    since_ts    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
