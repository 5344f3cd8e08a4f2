-- A web console session is a service token opened with another token (its parent): revoking or
-- expiring the parent ends the session, and the session may mint tokens only as long-lived as
-- the parent could. NULL for every other token, and for sessions opened with a JWT.
ALTER TABLE auth_tokens ADD COLUMN parent_id TEXT;
