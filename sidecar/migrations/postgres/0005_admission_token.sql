-- A leaked filter secret must not buy a second response: every admission (first admission and
-- each redemption) gets a fresh random token that only the admitting proxy sees, and an outcome
-- is recorded only with the token of the payment's current admission. This column holds the
-- BLAKE2b-256 of that token (hex); NULL = no outcome report is accepted for the row (facilitator
-- settlements, rows admitted before this migration: their lease ends by itself).
ALTER TABLE payments ADD COLUMN admission_token TEXT;
