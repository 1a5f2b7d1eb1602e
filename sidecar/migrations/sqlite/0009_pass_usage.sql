-- Pass usage per reporting filter VM (docs/passes.md): each VM reports its running total on a
-- counted pass under its own random id; the row keeps the highest total seen, so a report sent
-- again after its answer was lost is applied once. A pass's `requests_used` is the sum of its
-- rows. Counts recorded before this table existed become one row of the VM id `legacy`.
CREATE TABLE IF NOT EXISTS pass_usage (
    pass TEXT NOT NULL,
    vm   TEXT NOT NULL,
    seen INTEGER NOT NULL,
    PRIMARY KEY (pass, vm)
);
INSERT INTO pass_usage (pass, vm, seen)
    SELECT id, 'legacy', requests_used FROM passes WHERE requests_used > 0
    ON CONFLICT (pass, vm) DO NOTHING;
