-- A version row carries its secret's tenant, and row-level security on versions compares that
-- column with the session's tenant, as it does on secrets.
--
-- The policies of 0002 and 0008 made a version visible when `EXISTS (SELECT 1 FROM secrets s
-- WHERE s.id = secret_id)`. PostgreSQL may run that subquery as a hashed subplan: every decrypt
-- then read and hashed all of the tenant's secrets to look one version up. It did so whenever the
-- statistics under-counted the tenant (a table grown since its last ANALYZE): 35 buffers and
-- 0.8 ms for one read at 1,000 secrets, and 4.3k reads/s instead of 14.8k after an ANALYZE
-- (docs/benchmarks.md). A column comparison is one index probe at any size.
--
-- Inserts and updates still have to name a secret of the session's tenant (WITH CHECK keeps
-- the subquery: there it is evaluated for the rows written, not scanned for every row read), so
-- a version cannot be attached to another tenant's secret, and the tenant column cannot be
-- changed to another tenant's.

-- The owner is bound by row-level security (FORCE, 0002/0004): the backfill runs in the
-- owner's maintenance mode, for this transaction only.
SELECT set_config('rcrt.maintenance', 'on', true);

ALTER TABLE secret_versions ADD COLUMN tenant TEXT;
UPDATE secret_versions v SET tenant = s.tenant FROM secrets s WHERE s.id = v.secret_id;
ALTER TABLE secret_versions ALTER COLUMN tenant SET NOT NULL;

ALTER TABLE destroyed_versions ADD COLUMN tenant TEXT;
UPDATE destroyed_versions d SET tenant = s.tenant FROM secrets s WHERE s.id = d.secret_id;
ALTER TABLE destroyed_versions ALTER COLUMN tenant SET NOT NULL;

DROP POLICY tenant_isolation ON secret_versions;
CREATE POLICY tenant_isolation ON secret_versions
    USING (tenant = current_setting('rcrt.tenant', true))
    WITH CHECK (tenant = current_setting('rcrt.tenant', true)
                AND EXISTS (SELECT 1 FROM secrets s
                            WHERE s.id = secret_id AND s.tenant = secret_versions.tenant));

DROP POLICY tenant_isolation ON destroyed_versions;
CREATE POLICY tenant_isolation ON destroyed_versions
    USING (tenant = current_setting('rcrt.tenant', true))
    WITH CHECK (tenant = current_setting('rcrt.tenant', true)
                AND EXISTS (SELECT 1 FROM secrets s
                            WHERE s.id = secret_id AND s.tenant = destroyed_versions.tenant));

SELECT set_config('rcrt.maintenance', '', true);
