-- The claim before a broadcast (Store::claim) as one statement: binds the challenge nonce (if
-- any) to its payment and claims the payer's frontier in the fork set, or leaves no trace.
-- Called as `SELECT nanogate_claim(...)` outside any transaction, it is one round trip holding
-- one pooled connection, where BEGIN, two or three statements and COMMIT were four or five.
-- The statements and their order are those of the two-statement claim (sidecar/src/store/
-- hot.rs); each runs with a fresh snapshot (READ COMMITTED), so a racing claim on the same
-- nonce or frontier waits on the unique index exactly as before. Answers 'claimed',
-- 'nonce_taken' (bound to another payment) or 'frontier_taken' (claimed by another block or
-- attempt; the binding this call made is deleted again, in the same transaction).
CREATE OR REPLACE FUNCTION nanogate_claim(
    p_nonce TEXT,
    p_payment_key TEXT,
    p_nonce_expires_at BIGINT,
    p_frontier_key TEXT,
    p_block_hash TEXT,
    p_fork_nonce TEXT,
    p_owner TEXT,
    p_lease_until BIGINT,
    p_expires_at BIGINT,
    p_terms TEXT,
    p_now BIGINT
) RETURNS TEXT LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    bound_here BOOLEAN := false;
    affected BIGINT;
BEGIN
    IF p_nonce IS NOT NULL THEN
        INSERT INTO sessions (nonce, payment_key, expires_at)
        VALUES (p_nonce, p_payment_key, p_nonce_expires_at)
        ON CONFLICT (nonce) DO NOTHING;
        GET DIAGNOSTICS affected = ROW_COUNT;
        bound_here := affected = 1;
        IF NOT bound_here AND NOT EXISTS (
            SELECT 1 FROM sessions WHERE nonce = p_nonce AND payment_key = p_payment_key
        ) THEN
            RETURN 'nonce_taken';
        END IF;
    END IF;
    INSERT INTO forks AS f (frontier_key, block_hash, nonce, owner, lease_until, expires_at, terms)
    VALUES (p_frontier_key, p_block_hash, p_fork_nonce, p_owner, p_lease_until, p_expires_at,
            p_terms)
    ON CONFLICT (frontier_key) DO UPDATE SET
        block_hash = excluded.block_hash, nonce = excluded.nonce, owner = excluded.owner,
        lease_until = excluded.lease_until, expires_at = excluded.expires_at,
        terms = excluded.terms
    WHERE f.expires_at <= p_now
       OR (f.block_hash = excluded.block_hash
           AND f.nonce IS NOT DISTINCT FROM excluded.nonce
           AND (f.terms IS NULL OR f.terms = excluded.terms)
           AND f.lease_until <= p_now);
    GET DIAGNOSTICS affected = ROW_COUNT;
    IF affected = 1 THEN
        RETURN 'claimed';
    END IF;
    IF bound_here THEN
        DELETE FROM sessions WHERE nonce = p_nonce;
    END IF;
    RETURN 'frontier_taken';
END
$$;
