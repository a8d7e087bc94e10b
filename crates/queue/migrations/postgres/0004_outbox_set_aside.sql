-- An activity row the server cannot write (not JSON, or not fitting the `activity`
-- slice) is set aside instead of blocking or dropping the rows behind it: kept, with
-- when and why, and never claimed again.
ALTER TABLE activity_outbox ADD COLUMN IF NOT EXISTS set_aside_at BIGINT;
ALTER TABLE activity_outbox ADD COLUMN IF NOT EXISTS set_aside_reason TEXT;
