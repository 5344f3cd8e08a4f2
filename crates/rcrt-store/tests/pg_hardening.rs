//! PostgreSQL hardening, against the local cluster with non-superuser database owners (a
//! superuser bypasses row-level security and every privilege, so only non-superusers show what
//! the roles and policies hold):
//!
//! 1. Each database has its own app role: another database's owner on the same cluster cannot
//!    `SET ROLE` to it, nor read or change our rows through any role it can become.
//! 2. The app role can only insert and read audit rows, never update or delete them.
//! 3. Row-level security binds the owner too (FORCE): outside maintenance it sees no tenant's
//!    rows, while the store's maintenance paths (KEK census, scans, re-wrap, token lookup by id,
//!    audit export, bootstrap) still see every tenant.
//! 4. A database migrated by the old schema (shared `rcrt_app`) moves to its own role, and the
//!    shared role loses every privilege in it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use rcrt_store::{
    NewSecret, PgStore, Rewrapped, SecretMeta, Store, TokenRecord, VersionFilter, VersionRecord,
};
use rcrt_types::{AuditAction, AuditEntry, AuditOutcome, Role, Scope, SecretId, TenantId, TokenId};
use time::OffsetDateTime;
use tokio_postgres::{Client, NoTls};

fn now() -> OffsetDateTime {
    let t = OffsetDateTime::now_utc();
    t.replace_nanosecond(t.nanosecond() / 1000 * 1000).unwrap()
}

fn audit(action: AuditAction, id: Option<SecretId>, tenant: &TenantId) -> AuditEntry {
    AuditEntry {
        timestamp: now(),
        action,
        secret_id: id,
        token_id: None,
        tenant: tenant.clone(),
        user_id: "tester".into(),
        reason: Some("because".into()),
        outcome: AuditOutcome::Success,
        request_id: "req-1".into(),
        version: None,
    }
}

async fn create(s: &PgStore, tenant: &TenantId, name: &str) -> SecretId {
    let t = now();
    let id = SecretId::new();
    let n = NewSecret {
        meta: SecretMeta {
            id,
            tenant: tenant.clone(),
            name: name.parse().unwrap(),
            scope: Scope::global(),
            version: 1,
            created_at: t,
            updated_at: t,
            attrs: Default::default(),
            deleted: None,
        },
        first: VersionRecord {
            version: 1,
            kek_id: "kek-a".into(),
            wrapped_dek: vec![1, 2, 3],
            sealed_value: vec![4, 5, 6],
            created_at: t,
            recovery: None,
            created_by: String::new(),
        },
        vault: None,
        idempotency: None,
    };
    s.create_secret(n, audit(AuditAction::Create, Some(id), tenant))
        .await
        .unwrap();
    id
}

fn token(tenant: &TenantId) -> TokenRecord {
    TokenRecord {
        id: TokenId::from(*uuid::Uuid::new_v4().as_bytes()),
        tenant: tenant.clone(),
        name: "t".into(),
        principal: "svc".into(),
        roles: [Role::Read].into_iter().collect(),
        workspaces: vec![],
        secret_hash: [7; 32],
        created_by: "tester".into(),
        created_at: now(),
        expires_at: None,
        revoked_at: None,
        parent: None,
    }
}

fn token_audit(id: TokenId, tenant: &TenantId) -> AuditEntry {
    AuditEntry {
        token_id: Some(id),
        ..audit(AuditAction::TokenCreate, None, tenant)
    }
}

async fn connect(url: &str) -> Client {
    let (client, conn) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(conn);
    client
}

/// `url` (the admin URL) with another user and database.
fn url_for(user: &str, db: &str) -> String {
    let admin = rcrt_testkit::pg_admin_url();
    let (scheme, rest) = admin.split_once("://").unwrap();
    let (authority, _) = rest.split_once('/').unwrap_or((rest, ""));
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    format!("{scheme}://{user}@{hostport}/{db}")
}

/// Runs each statement as the admin, on a thread of its own (Drop may run inside a runtime).
/// Failures are printed, not raised: this cleans up after a test, possibly a failed one.
fn admin_blocking(statements: Vec<String>) {
    let _ = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let c = connect(&rcrt_testkit::pg_admin_url()).await;
            for sql in statements {
                if let Err(e) = c.batch_execute(&sql).await {
                    eprintln!("cleanup: {sql}: {e}");
                }
            }
        });
    })
    .join();
}

/// A non-superuser login role that may create databases and roles (what our migration needs),
/// with the databases it creates. Dropped with its databases and the app roles they made.
struct Owner {
    name: String,
    dbs: Vec<String>,
}

impl Owner {
    async fn create() -> Self {
        let name = format!("rcrt_owner_{}", uuid::Uuid::new_v4().simple());
        connect(&rcrt_testkit::pg_admin_url())
            .await
            .batch_execute(&format!(
                "CREATE ROLE {name} LOGIN CREATEDB CREATEROLE NOSUPERUSER"
            ))
            .await
            .unwrap();
        Self { name, dbs: vec![] }
    }

    /// A new database created (and so owned) by this role; returns its URL as this role.
    async fn database(&mut self) -> String {
        let db = format!("rcrt_test_{}", uuid::Uuid::new_v4().simple());
        connect(&url_for(&self.name, "postgres"))
            .await
            .batch_execute(&format!("CREATE DATABASE {db}"))
            .await
            .unwrap();
        self.dbs.push(db.clone());
        url_for(&self.name, &db)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        let mut sql: Vec<String> = self
            .dbs
            .iter()
            .map(|db| format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .collect();
        // The app roles this owner's migrations created (it is their only member).
        let name = &self.name;
        sql.push(format!(
            "DO $$ DECLARE r text; BEGIN
               FOR r IN SELECT g.rolname FROM pg_auth_members m
                        JOIN pg_roles g ON g.oid = m.roleid JOIN pg_roles u ON u.oid = m.member
                        WHERE u.rolname = '{name}' AND g.rolname LIKE 'rcrt\\_app\\_%'
               LOOP EXECUTE format('DROP ROLE %I', r); END LOOP;
             END $$"
        ));
        sql.push(format!("DROP ROLE IF EXISTS {name}"));
        admin_blocking(sql);
    }
}

async fn app_role(c: &Client) -> String {
    c.query_one("SELECT value FROM rcrt_state WHERE key = 'app_role'", &[])
        .await
        .unwrap()
        .get(0)
}

/// Items 1 and 4's second owner: two non-superuser owners each migrate their own database on
/// one cluster; neither can act in the other's database.
#[tokio::test]
async fn another_owner_cannot_use_our_app_role() {
    let mut ours = Owner::create().await;
    let mut theirs = Owner::create().await;
    let our_url = ours.database().await;
    let their_url = theirs.database().await;
    let store = PgStore::connect(&our_url).await.unwrap();
    // The other deployment runs the same migrations in its own database.
    drop(PgStore::connect(&their_url).await.unwrap());
    let t = TenantId::new("tenant-a");
    create(&store, &t, "MINE").await;

    let our_app = app_role(&connect(&our_url).await).await;
    assert!(our_app.starts_with("rcrt_app_"), "{our_app}");
    let their_app = app_role(&connect(&their_url).await).await;
    assert_ne!(our_app, their_app, "each database has its own role");

    // The other owner, connected to our database.
    let intruder = connect(&url_for(&theirs.name, db_name(&our_url))).await;
    let err = intruder
        .batch_execute(&format!("SET ROLE {our_app}"))
        .await
        .expect_err("another database's owner must not become our app role");
    assert!(
        err.as_db_error()
            .is_some_and(|e| e.code().code() == "42501"),
        "{err:?}"
    );
    // Nor read or change our rows through any role it can become (its own app role, the old
    // shared rcrt_app if it exists, itself).
    let roles: Vec<String> = intruder
        .query(
            "SELECT rolname::text FROM pg_roles WHERE pg_has_role(current_user, oid, 'MEMBER')",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(roles.contains(&their_app), "{roles:?}");
    for role in &roles {
        intruder
            .batch_execute(&format!(
                "RESET ROLE; SET ROLE {role}; SET rcrt.tenant = 'tenant-a'; SET rcrt.maintenance = 'on'"
            ))
            .await
            .unwrap();
        for sql in [
            "SELECT count(*) FROM secrets",
            "SELECT count(*) FROM secret_versions",
            "SELECT count(*) FROM secret_access_log",
            "SELECT count(*) FROM destroyed_versions",
            "SELECT count(*) FROM idempotency_keys",
            "DELETE FROM secret_access_log",
            "DELETE FROM idempotency_keys",
            "DELETE FROM secrets",
        ] {
            let r = intruder.query(sql, &[]).await;
            assert!(
                r.is_err(),
                "as {role} the other owner ran {sql:?} in our database: {r:?}"
            );
        }
    }
    // Our data is intact.
    assert_eq!(store.kek_usage().await.unwrap()[0].versions, 1);
    assert_eq!(store.list_audit(None, 10).await.unwrap().len(), 1);
}

fn db_name(url: &str) -> &str {
    url.rsplit('/').next().unwrap()
}

/// Item 2: the request path's role appends to and reads the audit log, nothing more.
#[tokio::test]
async fn app_role_cannot_update_or_delete_audit_rows() {
    let mut owner = Owner::create().await;
    let url = owner.database().await;
    let store = PgStore::connect(&url).await.unwrap();
    let t = TenantId::new("tenant-a");
    create(&store, &t, "AUDITED").await;
    let c = connect(&url).await;
    let app = app_role(&c).await;
    c.batch_execute(&format!("SET ROLE {app}; SET rcrt.tenant = 'tenant-a'"))
        .await
        .unwrap();
    assert_eq!(
        c.query_one("SELECT count(*) FROM secret_access_log", &[])
            .await
            .unwrap()
            .get::<_, i64>(0),
        1
    );
    c.execute(
        "INSERT INTO secret_access_log (timestamp, action, tenant, user_id, outcome, request_id)
         VALUES (now(), 'decrypt', 'tenant-a', 'x', 'success', 'r')",
        &[],
    )
    .await
    .unwrap();
    for sql in [
        "UPDATE secret_access_log SET reason = 'rewritten'",
        "DELETE FROM secret_access_log",
        "TRUNCATE secret_access_log",
    ] {
        let err = c.execute(sql, &[]).await.expect_err(sql);
        assert!(
            err.as_db_error()
                .is_some_and(|e| e.code().code() == "42501"),
            "{sql}: {err:?}"
        );
    }
    c.batch_execute("RESET ROLE").await.unwrap();
    assert_eq!(store.list_audit(None, 10).await.unwrap().len(), 2);
}

/// Item 3: FORCE row-level security on the owner, and the maintenance paths that must still see
/// every tenant, run by a non-superuser owner.
#[tokio::test]
async fn owner_sees_every_tenant_only_in_maintenance() {
    let mut owner = Owner::create().await;
    let url = owner.database().await;
    let store = PgStore::connect(&url).await.unwrap();
    let (a, b) = (TenantId::new("tenant-a"), TenantId::new("tenant-b"));
    let sa = create(&store, &a, "A1").await;
    create(&store, &b, "B1").await;
    let (ta, tb) = (token(&a), token(&b));
    for t in [&ta, &tb] {
        store
            .create_token(t.clone(), token_audit(t.id, &t.tenant))
            .await
            .unwrap();
    }

    // A plain owner session (what a query run as the owner by mistake gets): nothing.
    let c = connect(&url).await;
    for table in ["secrets", "secret_versions", "auth_tokens", "vaults"] {
        let n: i64 = c
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            n, 0,
            "the owner outside maintenance sees {n} rows of {table}"
        );
    }
    // The audit log is not forced: the guide's query works for the owner.
    let n: i64 = c
        .query_one("SELECT count(*) FROM secret_access_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    c.batch_execute("SET rcrt.maintenance = 'on'")
        .await
        .unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // The store's maintenance paths see both tenants.
    assert_eq!(store.kek_usage().await.unwrap()[0].versions, 2);
    assert!(store.find_token(ta.id).await.unwrap().is_some());
    assert!(store.find_token(tb.id).await.unwrap().is_some());
    assert!(store.has_tokens().await.unwrap());
    assert_eq!(store.list_audit(None, 100).await.unwrap().len(), 4);
    let scanned = store
        .scan_versions(&VersionFilter::NotUnderKek("kek-b".into()), None, 100, true)
        .await
        .unwrap();
    assert_eq!(scanned.len(), 2);
    let rewrapped: Vec<Rewrapped> = scanned
        .iter()
        .map(|v| Rewrapped {
            secret_id: v.secret_id,
            version: v.version,
            old_wrapped_dek: v.wrapped_dek.clone(),
            kek_id: "kek-b".into(),
            wrapped_dek: vec![9, 9, 9],
            recovery: None,
            resealed: None,
        })
        .collect();
    assert_eq!(store.replace_wrapped(rewrapped).await.unwrap(), 2);
    assert_eq!(store.kek_usage().await.unwrap()[0].kek_id, "kek-b");
    // Audits of two tenants in one call (owner path) and the bootstrap paths.
    store
        .append_audits(vec![
            audit(AuditAction::Decrypt, Some(sa), &a),
            audit(AuditAction::Decrypt, None, &b),
        ])
        .await
        .unwrap();
    let boot = token(&TenantId::default_tenant());
    let stored = store
        .ensure_token(boot.clone(), token_audit(boot.id, &boot.tenant))
        .await
        .unwrap();
    assert_eq!(stored.id, boot.id);
    let first = token(&TenantId::default_tenant());
    assert!(!store
        .create_first_token(first.clone(), token_audit(first.id, &first.tenant))
        .await
        .unwrap());
    // And the tenant paths still see only their tenant.
    assert!(store.get_meta(&a, sa).await.unwrap().is_some());
    assert!(store.get_meta(&b, sa).await.unwrap().is_none());
}

/// Item 3 for the lifecycle tables (migration 8), by a non-superuser owner: outside maintenance
/// the owner sees no destroyed-version record or idempotency key; the lifecycle's maintenance
/// paths (purge job, idempotency purge, expiring gauge) see every tenant, while the request
/// paths keep to their tenant.
#[tokio::test]
async fn lifecycle_maintenance_paths_see_every_tenant_only_in_maintenance() {
    use rcrt_store::{Deletion, DestroyOutcome, IdempotencyRecord};
    use std::time::Duration;

    let mut owner = Owner::create().await;
    let url = owner.database().await;
    let store = PgStore::connect(&url).await.unwrap();
    let (a, b) = (TenantId::new("tenant-a"), TenantId::new("tenant-b"));
    let past = now() - Duration::from_secs(60);
    let mut ids = Vec::new();
    for t in [&a, &b] {
        let id = create(&store, t, "S").await;
        let mut v2 = VersionRecord {
            version: 2,
            kek_id: "kek-a".into(),
            wrapped_dek: vec![1],
            sealed_value: vec![2],
            created_at: now(),
            recovery: None,
            created_by: "tester".into(),
        };
        store
            .add_version(t, id, v2.clone(), audit(AuditAction::Update, Some(id), t))
            .await
            .unwrap()
            .unwrap();
        v2.version = 3;
        // A cap of 2 destroys version 1 in the write's transaction.
        let options = rcrt_store::AddVersionOptions {
            keep: Some(2),
            idempotency: Some(IdempotencyRecord {
                tenant: t.clone(),
                principal: "tester".into(),
                key: "k".into(),
                fingerprint: [1; 32],
                outcome: "o".into(),
                created_at: past - Duration::from_secs(60),
                expires_at: past,
            }),
        };
        store
            .add_version_with(t, id, v2, options, audit(AuditAction::Update, Some(id), t))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            store
                .destroy_version(
                    t,
                    id,
                    1,
                    now(),
                    audit(AuditAction::DestroyVersion, Some(id), t)
                )
                .await
                .unwrap(),
            DestroyOutcome::AlreadyDestroyed
        );
        ids.push(id);
    }
    // One expiring secret per tenant; tenant-b's soft-deleted (not counted), then due.
    for (t, id) in [(&a, ids[0]), (&b, ids[1])] {
        let mut attrs = store.get_meta(t, id).await.unwrap().unwrap().attrs;
        attrs.expires_at = Some(now() + Duration::from_secs(60));
        store
            .update_attributes(
                t,
                id,
                attrs,
                audit(AuditAction::UpdateMetadata, Some(id), t),
            )
            .await
            .unwrap()
            .unwrap();
    }
    let deletion = Deletion {
        deleted_at: past,
        purge_at: past,
    };
    assert!(store
        .soft_delete(
            &b,
            ids[1],
            deletion,
            audit(AuditAction::SoftDelete, Some(ids[1]), &b)
        )
        .await
        .unwrap());

    let c = connect(&url).await;
    let count = |table: &'static str| {
        let c = &c;
        async move {
            c.query_one(&format!("SELECT count(*) FROM {table}"), &[])
                .await
                .unwrap()
                .get::<_, i64>(0)
        }
    };
    for table in ["destroyed_versions", "idempotency_keys"] {
        assert_eq!(
            count(table).await,
            0,
            "the owner outside maintenance sees {table}"
        );
    }
    c.batch_execute("SET rcrt.maintenance = 'on'")
        .await
        .unwrap();
    assert_eq!(count("destroyed_versions").await, 2);
    assert_eq!(count("idempotency_keys").await, 2);

    assert_eq!(
        store
            .count_expiring(now() + Duration::from_secs(3600))
            .await
            .unwrap(),
        1,
        "live expiring secrets of every tenant"
    );
    let template = audit(AuditAction::Purge, None, &TenantId::new("system"));
    let purged = store.purge_due(now(), 10, template).await.unwrap();
    assert_eq!(purged, vec![(b.clone(), ids[1])]);
    // The purge took the secret's versions and version records with it.
    assert_eq!(count("destroyed_versions").await, 1);
    assert_eq!(count("secret_versions").await, 2);
    assert_eq!(store.purge_idempotency(now()).await.unwrap(), 2);
    assert_eq!(count("idempotency_keys").await, 0);
    // The request paths still keep to their tenant.
    let versions = store
        .list_versions(&a, ids[0], None, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(versions.len(), 3);
    assert!(store
        .list_versions(&b, ids[0], None, 10)
        .await
        .unwrap()
        .is_none());
}

/// Item 4: a database migrated before 0004 (the shared rcrt_app with its grants) moves to its
/// own role; the shared role keeps no privilege here.
#[tokio::test]
async fn old_shared_role_loses_its_privileges() {
    let mut owner = Owner::create().await;
    let url = owner.database().await;
    let c = connect(&url).await;
    // The schema as 0001-0003 left it, with the shared role's lines those migrations had.
    c.batch_execute(concat!(
        include_str!("../migrations/postgres/0001_init.sql"),
        include_str!("../migrations/postgres/0002_vaults_rls.sql"),
        include_str!("../migrations/postgres/0003_tokens.sql"),
        "DO $$ BEGIN
             CREATE ROLE rcrt_app NOLOGIN;
         EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
         END $$;
         GRANT rcrt_app TO CURRENT_USER;
         GRANT SELECT, INSERT, UPDATE, DELETE ON secrets, secret_versions, secret_access_log,
             vaults TO rcrt_app;
         GRANT USAGE ON SEQUENCE secret_access_log_id_seq TO rcrt_app;
         GRANT SELECT, INSERT, UPDATE ON auth_tokens TO rcrt_app;
         CREATE TABLE rcrt_schema_migrations (version BIGINT PRIMARY KEY, applied_at TEXT NOT NULL);
         INSERT INTO rcrt_schema_migrations VALUES (1, now()::text), (2, now()::text), (3, now()::text);"
    ))
    .await
    .unwrap();
    let store = PgStore::connect(&url).await.unwrap();
    let t = TenantId::new("tenant-a");
    create(&store, &t, "AFTER").await;
    let left: i64 = c
        .query_one(
            "SELECT count(*) FROM information_schema.role_table_grants
             WHERE grantee = 'rcrt_app' AND table_catalog = current_database()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "rcrt_app keeps privileges in this database");
    let seq: bool = c
        .query_one(
            "SELECT has_sequence_privilege('rcrt_app', 'secret_access_log_id_seq', 'USAGE')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!seq);
    let app = app_role(&c).await;
    assert!(app.starts_with("rcrt_app_"), "{app}");
    assert!(store.get_meta(&t, SecretId::new()).await.unwrap().is_none());
}

// ---------------------------------------------------------------------------------------------
// TLS to PostgreSQL: a throwaway cluster with a test CA, accepting only TLS connections
// ---------------------------------------------------------------------------------------------

fn run(cmd: &mut std::process::Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `cmd` as the `postgres` OS user when running as root (initdb refuses root).
fn as_pg_user(program: &str) -> std::process::Command {
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if root {
        let mut c = std::process::Command::new("runuser");
        c.args(["-u", "postgres", "--", program]);
        c
    } else {
        std::process::Command::new(program)
    }
}

/// The server programs of the newest PostgreSQL installed under /usr/lib/postgresql (Debian's
/// layout), as scripts/test finds them.
fn pg_bin() -> String {
    let mut dirs: Vec<(u32, std::path::PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL's programs under /usr/lib/postgresql (apt-get install postgresql)")
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    dirs.sort();
    let (_, bin) = dirs
        .pop()
        .expect("an initdb under /usr/lib/postgresql/*/bin");
    bin.display().to_string()
}

/// A PostgreSQL cluster in a temporary directory, listening on 127.0.0.1 with TLS only
/// (`hostnossl ... reject`), its server certificate issued by a test CA for `localhost` and
/// `127.0.0.1`. Stopped and removed on drop.
struct TlsCluster {
    dir: std::path::PathBuf,
    port: u16,
}

impl TlsCluster {
    fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("rcrt-tls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let d = |p: &str| dir.join(p).to_str().unwrap().to_owned();
        let openssl = || std::process::Command::new("openssl");
        let ec = [
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
        ];
        // The test CA, a second (wrong) CA, and the server's certificate from the first.
        for ca in ["ca", "wrong-ca"] {
            run(openssl()
                .args([
                    "req",
                    "-x509",
                    "-days",
                    "2",
                    "-subj",
                    &format!("/CN=rcrt test {ca}"),
                ])
                .args(ec)
                .args(["-addext", "basicConstraints=critical,CA:TRUE"])
                .args(["-addext", "keyUsage=critical,keyCertSign,cRLSign"])
                .args([
                    "-keyout",
                    &d(&format!("{ca}.key")),
                    "-out",
                    &d(&format!("{ca}.crt")),
                ]));
        }
        run(openssl()
            .args(["req", "-subj", "/CN=localhost"])
            .args(ec)
            .args(["-keyout", &d("server.key"), "-out", &d("server.csr")]));
        std::fs::write(
            d("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        run(openssl().args([
            "x509",
            "-req",
            "-days",
            "2",
            "-in",
            &d("server.csr"),
            "-CA",
            &d("ca.crt"),
            "-CAkey",
            &d("ca.key"),
            "-CAcreateserial",
            "-out",
            &d("server.crt"),
            "-extfile",
            &d("ext.cnf"),
        ]));
        run(std::process::Command::new("chmod").args(["-R", "go-rwx", dir.to_str().unwrap()]));
        run(std::process::Command::new("chmod").args(["711", dir.to_str().unwrap()]));
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
            .output();
        run(as_pg_user(&format!("{}/initdb", pg_bin())).args([
            "-D",
            &d("data"),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]));
        std::fs::write(
            d("data/pg_hba.conf"),
            "local all all trust\n\
             hostssl all all 127.0.0.1/32 trust\n\
             hostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let port = rcrt_testkit::free_port();
        let opts = format!(
            "-p {port} -k {dir} -c listen_addresses=127.0.0.1 -c ssl=on -c ssl_cert_file={cert} \
             -c ssl_key_file={key} -c fsync=off",
            dir = dir.display(),
            cert = d("server.crt"),
            key = d("server.key"),
        );
        let cluster = Self {
            dir: dir.clone(),
            port,
        };
        run(as_pg_user(&format!("{}/pg_ctl", pg_bin())).args([
            "-D",
            &d("data"),
            "-l",
            &d("log"),
            "-w",
            "-t",
            "30",
            "-o",
            &opts,
            "start",
        ]));
        cluster
    }

    fn path(&self, p: &str) -> String {
        self.dir.join(p).to_str().unwrap().to_owned()
    }

    /// A URL to database `postgres` on `host` (connecting to 127.0.0.1) with `params`.
    fn url(&self, host: &str, params: &str) -> String {
        format!(
            "postgres://postgres@{host}:{}/postgres?hostaddr=127.0.0.1&{params}",
            self.port
        )
    }

    /// How many client connections to the cluster use TLS, over the Unix socket.
    async fn tls_connections(&self) -> i64 {
        let (c, conn) = tokio_postgres::Config::new()
            .host_path(&self.dir)
            .port(self.port)
            .user("postgres")
            .dbname("postgres")
            .connect(NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        c.query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
             WHERE s.ssl AND a.pid <> pg_backend_pid() AND a.backend_type = 'client backend'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let _ = as_pg_user(&format!("{}/pg_ctl", pg_bin()))
            .args(["-D", &self.path("data"), "-m", "immediate", "-w", "stop"])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unavailable_message(r: Result<PgStore, rcrt_store::StoreError>) -> String {
    match r {
        Ok(_) => panic!("connected, but the connection should have been refused"),
        Err(e) => e.to_string(),
    }
}

/// Item 11: `sslmode=require|verify-ca|verify-full` with rustls and `sslrootcert`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_modes_against_a_tls_only_cluster() {
    let cluster = TlsCluster::start();
    let ca = cluster.path("ca.crt");
    let wrong = cluster.path("wrong-ca.crt");

    // require: encrypted (the cluster refuses anything else), certificate not checked.
    let store = PgStore::connect(&cluster.url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap();
    store.ping().await.unwrap();
    assert!(cluster.tls_connections().await >= 1);
    drop(store);

    // verify-full with the right CA, by IP address and by name.
    for host in ["127.0.0.1", "localhost"] {
        let url = cluster.url(host, &format!("sslmode=verify-full&sslrootcert={ca}"));
        let store = PgStore::connect(&url).await.unwrap();
        store.ping().await.unwrap();
    }
    // verify-ca ignores the name, not the chain.
    let url = cluster.url("db.invalid", &format!("sslmode=verify-ca&sslrootcert={ca}"));
    PgStore::connect(&url).await.unwrap().ping().await.unwrap();
    // require with a CA file verifies the chain, as libpq does.
    let url = cluster.url("127.0.0.1", &format!("sslmode=require&sslrootcert={wrong}"));
    let msg = unavailable_message(PgStore::connect(&url).await);
    assert!(msg.contains("UnknownIssuer"), "{msg}");

    // Refused: a certificate from another CA, and a host the certificate does not name.
    for mode in ["verify-ca", "verify-full"] {
        let url = cluster.url("127.0.0.1", &format!("sslmode={mode}&sslrootcert={wrong}"));
        let msg = unavailable_message(PgStore::connect(&url).await);
        assert!(
            msg.contains("invalid peer certificate") && msg.contains("UnknownIssuer"),
            "{mode} with the wrong CA: {msg}"
        );
    }
    let url = cluster.url(
        "db.invalid",
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    let msg = unavailable_message(PgStore::connect(&url).await);
    assert!(
        msg.contains("invalid peer certificate") && msg.contains("not valid for name"),
        "verify-full with the wrong host: {msg}"
    );
    // Plain text is refused by this cluster (so the successes above were TLS).
    let msg =
        unavailable_message(PgStore::connect(&cluster.url("127.0.0.1", "sslmode=disable")).await);
    assert!(
        msg.contains("no encryption") || msg.contains("pg_hba"),
        "{msg}"
    );
    // Bad settings name the parameter.
    for params in [
        "sslmode=verify-full",
        "sslmode=allow",
        "sslmode=verify-ca&sslrootcert=/nonexistent",
    ] {
        let err = PgStore::connect(&cluster.url("127.0.0.1", params))
            .await
            .err()
            .unwrap();
        assert!(
            matches!(err, rcrt_store::StoreError::Config(_)),
            "{params}: {err}"
        );
        assert!(err.to_string().contains("ssl"), "{params}: {err}");
    }
}

/// The default (`prefer`) and `sslmode=disable` still work against the ordinary local cluster.
#[tokio::test]
async fn default_and_plain_connections_still_work() {
    let db = rcrt_testkit::TempPgDb::create().await;
    for url in [db.url().to_owned(), format!("{}?sslmode=disable", db.url())] {
        let store = PgStore::connect(&url).await.unwrap();
        store.ping().await.unwrap();
        create(&store, &TenantId::new("t"), &format!("S{}", url.len())).await;
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL 16+: two non-superuser owners on one cluster, each migrating its own database
// ---------------------------------------------------------------------------------------------

/// A throwaway cluster of the newer PostgreSQL (`rcrt_testkit::newer_pg_bin`) on 127.0.0.1,
/// stopped and removed on drop.
struct NewerCluster {
    bin: std::path::PathBuf,
    dir: std::path::PathBuf,
    port: u16,
}

impl NewerCluster {
    fn start() -> Self {
        let bin = rcrt_testkit::newer_pg_bin();
        let dir =
            std::env::temp_dir().join(format!("rcrt-pgnew-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let _ = std::process::Command::new("chown")
            .args(["-R", "postgres:postgres", dir.to_str().unwrap()])
            .output();
        let tool = |name: &str| bin.join(name).to_str().unwrap().to_owned();
        let data = dir.join("data").to_str().unwrap().to_owned();
        run(as_pg_user(&tool("initdb")).args([
            "-D",
            &data,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ]));
        let port = rcrt_testkit::free_port();
        let cluster = Self {
            bin: bin.clone(),
            dir: dir.clone(),
            port,
        };
        run(as_pg_user(&tool("pg_ctl")).args([
            "-D",
            &data,
            "-l",
            dir.join("log").to_str().unwrap(),
            "-w",
            "-t",
            "30",
            "-o",
            &format!(
                "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
                dir.display()
            ),
            "start",
        ]));
        cluster
    }

    fn url(&self, user: &str, db: &str) -> String {
        format!(
            "postgres://{user}@127.0.0.1:{}/{db}?sslmode=disable",
            self.port
        )
    }
}

impl Drop for NewerCluster {
    fn drop(&mut self) {
        let _ = as_pg_user(self.bin.join("pg_ctl").to_str().unwrap())
            .args([
                "-D",
                self.dir.join("data").to_str().unwrap(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ])
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// On PostgreSQL 16+ a role's creator gets ADMIN on it but not SET, and CREATEROLE no longer
/// grants every role: the migration must still give the owner its app role, for a second
/// non-superuser owner as for the first, and neither owner may take the other's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_non_superuser_owner_migrates_on_postgres_16_plus() {
    let cluster = NewerCluster::start();
    let admin = connect(&cluster.url("postgres", "postgres")).await;
    let version: i32 = admin
        .query_one("SELECT current_setting('server_version_num')::int", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version >= 160_000, "server_version_num {version}");
    for o in ["owner_a", "owner_b"] {
        admin
            .batch_execute(&format!("CREATE ROLE {o} LOGIN CREATEDB CREATEROLE"))
            .await
            .unwrap();
        admin
            .batch_execute(&format!("CREATE DATABASE db_{o} OWNER {o}"))
            .await
            .unwrap();
    }
    let t = TenantId::new("t16");
    let mut roles = Vec::new();
    for o in ["owner_a", "owner_b"] {
        let url = cluster.url(o, &format!("db_{o}"));
        let store = PgStore::connect(&url)
            .await
            .unwrap_or_else(|e| panic!("{o} migrates its database: {e}"));
        let id = create(&store, &t, "K").await;
        assert!(store.get_meta(&t, id).await.unwrap().is_some(), "{o}");
        assert_eq!(store.list_audit(None, 10).await.unwrap().len(), 1, "{o}");
        roles.push(app_role(&connect(&url).await).await);
    }
    assert_ne!(roles[0], roles[1]);
    // owner_b, in owner_a's database, can neither become nor grant itself owner_a's app role.
    let b_in_a = connect(&cluster.url("owner_b", "db_owner_a")).await;
    for sql in [
        format!("SET ROLE {}", roles[0]),
        format!("GRANT {} TO owner_b", roles[0]),
    ] {
        let err = b_in_a.batch_execute(&sql).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE),
            "{sql}: {err:?}"
        );
    }
    let n: i64 = b_in_a
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    assert_eq!(n, 0, "owner_b reads owner_a's secrets");
}
