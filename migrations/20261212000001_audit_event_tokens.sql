-- Which API token a request authenticated with (the token's id, never its secret), so
-- an administrator can tell a leaked token's actions from its owner's browser session.
ALTER TABLE audit_events ADD COLUMN token_id TEXT;
