-- Listing reads one page in id order straight from an index, whatever the table's size: one index
-- per filter the store issues (tenant; tenant and scope type; tenant and exact scope), each ending
-- in id so ORDER BY id needs no sort.
CREATE INDEX secrets_tenant_id ON secrets (tenant, id);
CREATE INDEX secrets_tenant_type_id ON secrets (tenant, scope_type, id);
CREATE INDEX secrets_tenant_scope_id ON secrets (tenant, scope_type, scope_id, id);
