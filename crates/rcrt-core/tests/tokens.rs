//! Service-token rules without HTTP, over a real SQLite store, with a clock the test moves.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcrt_core::tokens::{BootstrapState, MintToken, TokenAuthError};
use rcrt_core::{Clock, CoreError, Limits, RequestContext, Service};
use rcrt_crypto::{Kek, ServiceToken};
use rcrt_keys::LocalKeyring;
use rcrt_store::{SqliteStore, Store};
use rcrt_types::{Principal, Role, Roles, TenantId};
use time::OffsetDateTime;
use zeroize::Zeroizing;

struct TestClock(Mutex<OffsetDateTime>);

impl TestClock {
    fn advance(&self, by: Duration) {
        let mut t = self.0.lock().unwrap();
        *t += by;
    }
}

impl Clock for TestClock {
    fn now(&self) -> OffsetDateTime {
        *self.0.lock().unwrap()
    }
}

struct Env {
    _dir: rcrt_testkit::TempDir,
    store: Arc<SqliteStore>,
    clock: Arc<TestClock>,
    svc: Service,
}

async fn env() -> Env {
    let dir = rcrt_testkit::TempDir::new();
    let store = Arc::new(
        SqliteStore::open(dir.path().join("s.db").to_str().unwrap())
            .await
            .unwrap(),
    );
    let clock = Arc::new(TestClock(Mutex::new(
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
    )));
    let svc = Service::new(
        store.clone(),
        Arc::new(LocalKeyring::new(
            Kek::from_bytes(Zeroizing::new([7; 32])),
            vec![],
        )),
        clock.clone(),
        Limits::default(),
    );
    Env {
        _dir: dir,
        store,
        clock,
        svc,
    }
}

fn ctx(user: &str, roles: &[Role], workspaces: &[&str]) -> RequestContext {
    RequestContext {
        principal: Principal {
            user_id: user.into(),
            tenant: TenantId::new("t1"),
            roles: roles.iter().copied().collect(),
            workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
            expires_at: None,
        },
        request_id: "req".into(),
    }
}

fn mint(name: &str, roles: &[Role], workspaces: &[&str], ttl: Option<u64>) -> MintToken {
    MintToken {
        name: name.into(),
        principal: None,
        roles: roles.iter().copied().collect(),
        workspaces: workspaces.iter().map(|w| (*w).to_owned()).collect(),
        ttl: ttl.map(Duration::from_secs),
    }
}

const ADMIN: &[Role] = &[
    Role::Admin,
    Role::Read,
    Role::Decrypt,
    Role::Write,
    Role::TokensCreate,
];

#[tokio::test]
async fn a_minted_token_acts_as_its_principal_until_it_expires() {
    let e = env().await;
    let admin = ctx("alice", ADMIN, &[]);
    let m = e
        .svc
        .mint_token(
            &admin,
            MintToken {
                principal: Some("ci-runner".into()),
                ..mint("ci", &[Role::Read, Role::Decrypt], &["w1"], Some(60))
            },
        )
        .await
        .unwrap();
    assert!(m.token.starts_with("rcrt_"));
    // Stored: the hash, never the token.
    let stored = e.store.find_token(m.record.id).await.unwrap().unwrap();
    assert_eq!(stored, m.record);
    assert_eq!(
        stored.secret_hash,
        *ServiceToken::parse(&m.token).unwrap().hash().as_bytes()
    );
    assert_eq!(stored.created_by, "alice");

    let p = e.svc.authenticate_token(&m.token).await.unwrap();
    assert_eq!(p.user_id, "ci-runner");
    assert_eq!(p.tenant, TenantId::new("t1"));
    assert_eq!(
        p.roles,
        [Role::Read, Role::Decrypt].into_iter().collect::<Roles>()
    );
    assert_eq!(p.workspaces, vec!["w1".to_owned()]);
    assert_eq!(p.expires_at, Some(e.clock.now() + Duration::from_secs(60)));

    // Expiry is checked against the clock on every request, cache or not.
    e.clock.advance(Duration::from_secs(59));
    assert!(e.svc.authenticate_token(&m.token).await.is_ok());
    e.clock.advance(Duration::from_secs(1));
    assert!(matches!(
        e.svc.authenticate_token(&m.token).await,
        Err(TokenAuthError::Expired)
    ));

    // Its creation is audited with the token's id.
    let rows = e.store.list_audit(None, 10).await.unwrap();
    assert!(rows.iter().any(|r| r.action == "token_create"
        && r.token_id == Some(m.record.id)
        && r.user_id == "alice"
        && r.outcome == "success"));
}

#[tokio::test]
async fn wrong_unknown_and_malformed_tokens_are_refused() {
    let e = env().await;
    let m = e
        .svc
        .mint_token(
            &ctx("alice", ADMIN, &[]),
            mint("x", &[Role::Read], &[], None),
        )
        .await
        .unwrap();
    // Right id, wrong secret.
    let mut wrong = m.token.to_string();
    let last = wrong.len() - 1;
    let flipped = if wrong.ends_with('0') { "1" } else { "0" };
    wrong.replace_range(last.., flipped);
    assert!(matches!(
        e.svc.authenticate_token(&wrong).await,
        Err(TokenAuthError::Unknown)
    ));
    // Still refused when the right token has just been cached.
    e.svc.authenticate_token(&m.token).await.unwrap();
    assert!(matches!(
        e.svc.authenticate_token(&wrong).await,
        Err(TokenAuthError::Unknown)
    ));
    let unknown = ServiceToken::generate().unwrap().expose_secret();
    assert!(matches!(
        e.svc.authenticate_token(&unknown).await,
        Err(TokenAuthError::Unknown)
    ));
    for bad in ["", "rcrt_", "Bearer x", &m.token[..50], &"a".repeat(5000)] {
        assert!(matches!(
            e.svc.authenticate_token(bad).await,
            Err(TokenAuthError::Malformed)
        ));
    }
}

#[tokio::test]
async fn no_escalation_and_nothing_written_when_refused() {
    let e = env().await;
    let admin = ctx("alice", ADMIN, &[]);
    let minter = ctx("bob", &[Role::Read, Role::TokensCreate], &["w1"]);
    let before = e.store.list_audit(None, 100).await.unwrap().len();
    let refused = [
        mint("w", &[Role::Write], &[], None),
        mint("a", &[Role::Admin], &[], None),
        mint("o", &[Role::Operator], &[], None),
        mint("ws", &[Role::Read], &["w2"], None),
        MintToken {
            principal: Some("alice".into()),
            ..mint("p", &[Role::Read], &[], None)
        },
    ];
    for req in refused {
        let name = req.name.clone();
        let err = e.svc.mint_token(&minter, req).await.err();
        assert!(
            matches!(err, Some(CoreError::Forbidden(_))),
            "{name}: {err:?}"
        );
    }
    // A reader without tokens.create may not mint at all.
    let reader = ctx("carol", &[Role::Read], &["w1"]);
    assert!(matches!(
        e.svc
            .mint_token(&reader, mint("r", &[Role::Read], &[], None))
            .await,
        Err(CoreError::Forbidden(_))
    ));
    // Nothing stored; every refusal audited as denied.
    let page = e.svc.list_tokens(&admin, None, None).await.unwrap();
    assert!(page.items.is_empty());
    let rows = e.store.list_audit(None, 100).await.unwrap();
    assert_eq!(rows.len() - before, 6);
    assert!(rows
        .iter()
        .all(|r| r.action == "token_create" && r.outcome == "denied"));

    // A short-lived token cannot mint a longer-lived one; without a ttl, the child gets what
    // remains of the parent's life. A JWT caller (no expiry of its authority) has no such cap.
    let mut short = minter.clone();
    short.principal.expires_at = Some(e.clock.now() + Duration::from_secs(60));
    let clamped = e
        .svc
        .mint_token(&short, mint("default ttl", &[Role::Read], &["w1"], None))
        .await
        .unwrap();
    assert_eq!(clamped.record.expires_at, short.principal.expires_at);
    let long = e
        .svc
        .mint_token(
            &minter,
            mint("year", &[Role::Read], &["w1"], Some(366 * 86_400)),
        )
        .await
        .unwrap();
    assert_eq!(
        long.record.expires_at,
        Some(e.clock.now() + Duration::from_secs(366 * 86_400))
    );
    assert!(e
        .svc
        .mint_token(&short, mint("ok", &[Role::Read], &["w1"], Some(60)))
        .await
        .is_ok());
    assert!(matches!(
        e.svc
            .mint_token(&short, mint("long", &[Role::Read], &["w1"], Some(61)))
            .await,
        Err(CoreError::Forbidden(_))
    ));
    let default = e
        .svc
        .mint_token(&minter, mint("default", &[Role::Read], &["w1"], None))
        .await
        .unwrap();
    assert_eq!(
        default.record.expires_at,
        Some(e.clock.now() + rcrt_core::tokens::DEFAULT_TOKEN_TTL)
    );
    // Bad input is a 400, not a 403.
    for req in [
        mint("", &[Role::Read], &[], None),
        mint("tab\tname", &[Role::Read], &[], None),
        mint("none", &[], &[], None),
        mint("ttl", &[Role::Read], &[], Some(0)),
        mint("ttl", &[Role::Read], &[], Some(367 * 86_400)),
        mint("ws", &[Role::Read], &["bad ws"], None),
    ] {
        assert!(matches!(
            e.svc.mint_token(&admin, req).await,
            Err(CoreError::Invalid(_))
        ));
    }
}

#[tokio::test]
async fn listing_and_revoking_follow_ownership() {
    let e = env().await;
    let admin = ctx("alice", ADMIN, &[]);
    let bob = ctx("bob", &[Role::Read, Role::TokensCreate], &[]);
    let bobs = e
        .svc
        .mint_token(&bob, mint("bobs", &[Role::Read], &[], None))
        .await
        .unwrap();
    let alices = e
        .svc
        .mint_token(&admin, mint("alices", &[Role::Read], &[], None))
        .await
        .unwrap();
    // Bob sees his own; the admin sees both; another tenant sees none.
    let names = |page: rcrt_core::tokens::TokenPage| {
        page.items.into_iter().map(|t| t.name).collect::<Vec<_>>()
    };
    assert_eq!(
        names(e.svc.list_tokens(&bob, None, None).await.unwrap()),
        ["bobs"]
    );
    assert_eq!(
        e.svc
            .list_tokens(&admin, None, None)
            .await
            .unwrap()
            .items
            .len(),
        2
    );
    let mut stranger = admin.clone();
    stranger.principal.tenant = TenantId::new("t2");
    assert!(e
        .svc
        .list_tokens(&stranger, None, None)
        .await
        .unwrap()
        .items
        .is_empty());
    let one = e.svc.list_tokens(&admin, Some(1), None).await.unwrap();
    let cursor = one.next_cursor.clone().unwrap();
    let two = e
        .svc
        .list_tokens(&admin, Some(1), Some(&cursor))
        .await
        .unwrap();
    assert_eq!(one.items.len() + two.items.len(), 2);
    assert!(two.next_cursor.is_none());

    // Bob may not revoke Alice's token; another tenant's admin may not either: both 404.
    for who in [&bob, &stranger] {
        assert!(matches!(
            e.svc.revoke_token(who, alices.record.id).await,
            Err(CoreError::TokenNotFound)
        ));
    }
    assert!(e.svc.authenticate_token(&alices.token).await.is_ok());
    // Bob revokes his own; it stops at once on this replica (cached or not).
    e.svc.authenticate_token(&bobs.token).await.unwrap();
    e.svc.revoke_token(&bob, bobs.record.id).await.unwrap();
    assert!(matches!(
        e.svc.authenticate_token(&bobs.token).await,
        Err(TokenAuthError::Revoked)
    ));
    // Revoking again is fine; the admin revokes Alice's.
    e.svc.revoke_token(&admin, bobs.record.id).await.unwrap();
    e.svc.revoke_token(&admin, alices.record.id).await.unwrap();
    assert!(e.svc.authenticate_token(&alices.token).await.is_err());
    let rows = e.store.list_audit(None, 100).await.unwrap();
    let outcomes: Vec<&str> = rows
        .iter()
        .filter(|r| r.action == "token_revoke")
        .map(|r| r.outcome.as_str())
        .collect();
    assert_eq!(outcomes.iter().filter(|o| **o == "denied").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == "failure").count(), 1);
    assert_eq!(outcomes.iter().filter(|o| **o == "success").count(), 3);
}

#[tokio::test]
async fn bootstrap_tokens() {
    let e = env().await;
    let boot = ServiceToken::generate().unwrap();
    assert!(!e.svc.has_tokens().await.unwrap());
    assert_eq!(
        e.svc.ensure_bootstrap_token(&boot).await.unwrap(),
        BootstrapState::Active
    );
    assert_eq!(
        e.svc.ensure_bootstrap_token(&boot).await.unwrap(),
        BootstrapState::Active
    );
    let p = e
        .svc
        .authenticate_token(&boot.expose_secret())
        .await
        .unwrap();
    assert_eq!(p.tenant, TenantId::default_tenant());
    assert_eq!(p.roles, Roles::all(), "every role, rcrt.operator included");
    assert_eq!(p.expires_at, None);
    assert_eq!(e.store.list_audit(None, 10).await.unwrap().len(), 1);

    // Same id, another secret: refused.
    let text = boot.expose_secret();
    let last = text.len() - 1;
    let mut other = text.to_string();
    other.replace_range(last.., if text.ends_with('0') { "1" } else { "0" });
    let impostor = ServiceToken::parse(&other).unwrap();
    assert!(e.svc.ensure_bootstrap_token(&impostor).await.is_err());

    // Revoked stays revoked.
    let ctx = RequestContext {
        principal: p,
        request_id: "r".into(),
    };
    e.svc.revoke_token(&ctx, boot.id().into()).await.unwrap();
    assert_eq!(
        e.svc.ensure_bootstrap_token(&boot).await.unwrap(),
        BootstrapState::Revoked
    );
    assert!(e.svc.authenticate_token(&text).await.is_err());
    // With a token in the store, no first token is created.
    let fresh = ServiceToken::generate().unwrap();
    assert!(!e.svc.create_first_token(&fresh).await.unwrap());
    assert!(e
        .svc
        .authenticate_token(&fresh.expose_secret())
        .await
        .is_err());
}
