-- GET /secrets/vaults pages a tenant's vaults in id order (Store::list_vaults): a range of this
-- index instead of sorting every vault of the tenant for each page.
CREATE INDEX vaults_tenant_id ON vaults (tenant, id);
