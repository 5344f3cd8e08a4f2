//! Authentication and authorization, end to end: the real `rcrt-server` binary with
//! `AUTH_MODE=jwt`, driven over HTTP.
//!
//! 1. Token checks for every key source (RS256 via JWKS and via a PEM file, ES256 and EdDSA via
//!    PEM files, HS256 via a secret file): every bad token gets a 401 with the JSON error body
//!    and `WWW-Authenticate: Bearer`, and provably never reaches a handler (nothing is created,
//!    changed or deleted, and not one audit row is written).
//! 2. The access matrix: role sets × target scopes × endpoints, expectations computed by
//!    [`allowed`], a restatement of `rcrt_core::authz`'s table.
//! 3. Tenant and workspace isolation probes on SQLite and PostgreSQL, with audit checks.
//! 4. The audit row of a successful decrypt names the token's `sub` and `owner_id`.
//! 5. Vault listing (`GET /secrets/vaults`) on SQLite and PostgreSQL: two tenants, a narrow
//!    token, paging, bad parameters.
//!
//! 2-5 run twice: with JWTs, and with service tokens minted (by a JWT tenant administrator) for
//! the same principals, roles and workspaces on a `AUTH_MODE=jwt,token` server, since a token
//! must go through exactly the rules a JWT does.
//!
//! Keys are generated at test time with the `openssl` CLI into temporary directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod auth_support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use auth_support::{
    b64url, now, run_to_exit, uniq, unsigned_token, Api, AuditRow, Backend, Checks, JwksServer,
    KeyKind, KeyPair, KeySource, Resp, Server, Signer, Who, ALL_ROLES,
};
use reqwest::Method;
use serde_json::{json, Map, Value};
use uuid::Uuid;

// =============================================================================================
// 1. Token checks
// =============================================================================================

/// Valid claims for `who`, changed by `f`.
fn with(who: &Who, f: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut c = who.claims();
    f(c.as_object_mut().unwrap());
    c
}

fn bearer(token: &str) -> Option<String> {
    Some(format!("Bearer {token}"))
}

/// Tokens that are valid and must be accepted (within the 30 s leeway, audience lists, the
/// scheme spelled in lower case).
fn good_variants(good: &Signer, who: &Who) -> Vec<(String, Option<String>)> {
    let t = now();
    vec![
        ("plain".into(), bearer(&good.sign(&who.claims()))),
        (
            "expired 10 s ago (within leeway)".into(),
            bearer(&good.sign(&with(who, |c| {
                c.insert("exp".into(), json!(t - 10));
                c.insert("nbf".into(), json!(t - 600));
            }))),
        ),
        (
            "nbf in 10 s (within leeway)".into(),
            bearer(&good.sign(&with(who, |c| {
                c.insert("nbf".into(), json!(t + 10));
            }))),
        ),
        (
            "aud as a list holding ours".into(),
            bearer(&good.sign(&with(who, |c| {
                c.insert(
                    "aud".into(),
                    json!(["someone-else", auth_support::AUDIENCE]),
                );
            }))),
        ),
        (
            "lower-case scheme".into(),
            Some(format!("bearer {}", good.sign(&who.claims()))),
        ),
    ]
}

/// Bad tokens every configuration must refuse. `foreign` signs with another key of the same
/// kind (and the same `kid`); `public_key` is the configured public key (PEM and DER) for the
/// HS256 confusion attack, if the configuration is asymmetric.
fn common_bad_cases(
    good: &Signer,
    foreign: &Signer,
    who: &Who,
    public_key: Option<(&[u8], &[u8])>,
) -> Vec<(String, Option<String>)> {
    let t = now();
    let kid = good.kid();
    let valid = good.sign(&who.claims());
    let parts: Vec<&str> = valid.split('.').collect();
    let (head, sig) = (parts[0], parts[2]);
    let claim_cases: Vec<(&str, Value)> = vec![
        (
            "expired 120 s ago (beyond the 30 s leeway)",
            with(who, |c| {
                c.insert("exp".into(), json!(t - 120));
                c.insert("iat".into(), json!(t - 720));
                c.insert("nbf".into(), json!(t - 720));
            }),
        ),
        (
            "expired 45 s ago (just beyond the leeway)",
            with(who, |c| {
                c.insert("exp".into(), json!(t - 45));
                c.insert("nbf".into(), json!(t - 600));
            }),
        ),
        (
            "nbf in 120 s (beyond the leeway)",
            with(who, |c| {
                c.insert("nbf".into(), json!(t + 120));
            }),
        ),
        (
            "nbf in 60 s (30 s beyond the leeway; margin for a slow run)",
            with(who, |c| {
                c.insert("nbf".into(), json!(t + 60));
            }),
        ),
        (
            "wrong issuer",
            with(who, |c| {
                c.insert("iss".into(), json!("https://evil.example"));
            }),
        ),
        (
            "issuer with a trailing slash",
            with(who, |c| {
                c.insert("iss".into(), json!(format!("{}/", auth_support::ISSUER)));
            }),
        ),
        (
            "wrong audience",
            with(who, |c| {
                c.insert("aud".into(), json!("another-service"));
            }),
        ),
        (
            "audience list without ours",
            with(who, |c| {
                c.insert("aud".into(), json!(["a", "b"]));
            }),
        ),
        (
            "no aud",
            with(who, |c| {
                c.remove("aud");
            }),
        ),
        (
            "no iss",
            with(who, |c| {
                c.remove("iss");
            }),
        ),
        (
            "no exp",
            with(who, |c| {
                c.remove("exp");
            }),
        ),
        (
            "no sub",
            with(who, |c| {
                c.remove("sub");
            }),
        ),
        (
            "no owner_id",
            with(who, |c| {
                c.remove("owner_id");
            }),
        ),
        (
            "empty sub",
            with(who, |c| {
                c.insert("sub".into(), json!(""));
            }),
        ),
        (
            "empty owner_id",
            with(who, |c| {
                c.insert("owner_id".into(), json!(""));
            }),
        ),
        (
            "owner_id not a string",
            with(who, |c| {
                c.insert("owner_id".into(), json!(42));
            }),
        ),
        (
            "roles not a list",
            with(who, |c| {
                c.insert("roles".into(), json!("secrets.admin"));
            }),
        ),
        // Claims of the wrong type: the JWT library skips a time or issuer it cannot parse.
        (
            "nbf as a string, in the future",
            with(who, |c| {
                c.insert("nbf".into(), json!((t + 3600).to_string()));
            }),
        ),
        (
            "exp as a string",
            with(who, |c| {
                c.insert("exp".into(), json!((t + 600).to_string()));
            }),
        ),
        (
            "iss as an array",
            with(who, |c| {
                c.insert("iss".into(), json!([auth_support::ISSUER]));
            }),
        ),
        (
            "iss as an array with ours and another",
            with(who, |c| {
                c.insert(
                    "iss".into(),
                    json!([auth_support::ISSUER, "https://evil.example"]),
                );
            }),
        ),
        (
            "aud as a number",
            with(who, |c| {
                c.insert("aud".into(), json!(7));
            }),
        ),
        (
            "sub not a string",
            with(who, |c| {
                c.insert("sub".into(), json!(["mallory"]));
            }),
        ),
    ];
    let mut cases: Vec<(String, Option<String>)> = claim_cases
        .into_iter()
        .map(|(label, claims)| (label.to_owned(), bearer(&good.sign(&claims))))
        .collect();

    let escalated = with(who, |c| {
        c.insert("owner_id".into(), json!("another-tenant"));
        c.insert("sub".into(), json!("mallory"));
    });
    let escalated_payload = b64url(escalated.to_string().as_bytes());
    cases.extend([
        (
            "signed by another key (same kid)".to_owned(),
            bearer(&foreign.sign(&who.claims())),
        ),
        (
            "payload swapped, original signature kept".to_owned(),
            bearer(&format!("{head}.{escalated_payload}.{sig}")),
        ),
        (
            "signature stripped".to_owned(),
            bearer(&format!("{head}.{}.", parts[1])),
        ),
        (
            "signature replaced by garbage".to_owned(),
            bearer(&format!("{head}.{}.QUFBQUFBQUE", parts[1])),
        ),
        (
            "alg none, empty signature".to_owned(),
            bearer(&unsigned_token("none", kid, &who.claims(), "")),
        ),
        (
            "alg None, empty signature".to_owned(),
            bearer(&unsigned_token("None", kid, &who.claims(), "")),
        ),
        (
            "alg NONE, a real signature attached".to_owned(),
            bearer(&unsigned_token("NONE", kid, &who.claims(), sig)),
        ),
        (
            "alg none, escalated claims".to_owned(),
            bearer(&unsigned_token("none", kid, &escalated, "")),
        ),
    ]);
    if let Some((pem, der)) = public_key {
        let hs = |secret: &[u8]| {
            let s = Signer::hs256(secret);
            match kid {
                Some(k) => s.with_kid(k),
                None => s,
            }
        };
        let trimmed = String::from_utf8_lossy(pem).trim().as_bytes().to_vec();
        cases.extend([
            (
                "HS256 signed with the public key PEM file's bytes (alg confusion)".to_owned(),
                bearer(&hs(pem).sign(&who.claims())),
            ),
            (
                "HS256 signed with the public key PEM, trimmed".to_owned(),
                bearer(&hs(&trimmed).sign(&who.claims())),
            ),
            (
                "HS256 signed with the public key DER".to_owned(),
                bearer(&hs(der).sign(&who.claims())),
            ),
        ]);
    }
    // Malformed Authorization headers.
    cases.extend([
        (
            "token without the Bearer scheme".to_owned(),
            Some(valid.clone()),
        ),
        (
            "Basic scheme".to_owned(),
            Some("Basic YWxpY2U6c2VjcmV0".to_owned()),
        ),
        ("Token scheme".to_owned(), Some(format!("Token {valid}"))),
        (
            "Bearer without a token".to_owned(),
            Some("Bearer".to_owned()),
        ),
        (
            "Bearer and spaces".to_owned(),
            Some("Bearer    ".to_owned()),
        ),
        ("Bearer garbage".to_owned(), bearer("not-a-jwt")),
        ("Bearer ..".to_owned(), bearer("..")),
        ("Bearer a.b.c".to_owned(), bearer("a.b.c")),
        (
            "two tokens".to_owned(),
            Some(format!("Bearer {valid} {valid}")),
        ),
        ("empty header".to_owned(), Some(String::new())),
        ("no Authorization header".to_owned(), None),
        (
            "a crit header extension nobody understands".to_owned(),
            bearer(&good.sign_with_header(&who.claims(), &json!({"crit": ["exp"], "exp": 1}))),
        ),
    ]);
    cases
}

/// A 401 as the API promises it: JSON error body with code "unauthorized" and
/// `WWW-Authenticate: Bearer`.
fn check_401(checks: &mut Checks, label: &str, r: &Resp) {
    checks.status(format!("[{label}] status"), r, 401);
    checks.eq(
        format!("[{label}] {} error code", r.what),
        r.code(),
        "unauthorized".into(),
    );
    checks.eq(
        format!("[{label}] {} WWW-Authenticate", r.what),
        r.header("www-authenticate"),
        Some("Bearer".into()),
    );
    checks.that(
        format!("[{label}] {} content type is JSON", r.what),
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
    );
}

/// A request of the bad-token sweep: method, path, JSON body, extra headers.
type Call<'a> = (Method, String, Option<Value>, Vec<(&'a str, &'a str)>);

/// Runs the token checks against one server. `good` signs valid tokens; every entry of `bad`
/// must be refused before any handler runs.
async fn token_suite(
    srv: &Server,
    config: &str,
    good: &Signer,
    bad: Vec<(String, Option<String>)>,
) -> Checks {
    let mut checks = Checks::default();
    let who = Who::new("token-suite-user", "tenant-tokens", &ALL_ROLES, &["W"]);
    let api = srv.as_token(&good.sign(&who.claims()));

    // Public endpoints need no token, and a bad one does not matter there.
    for path in ["/health", "/ready", "/metrics"] {
        for auth in [None, Some("Bearer garbage")] {
            let r = srv.req(Method::GET, path, auth, None, &[]).await;
            checks.status(format!("[{config}] {path} with {auth:?}"), &r, 200);
        }
    }

    // Valid tokens work.
    let value = format!("value-{}", uniq());
    let created = api
        .create(&format!("valid-{}", uniq()), &value, "global", None)
        .await;
    checks.status(
        format!("[{config}] create with a valid token"),
        &created,
        201,
    );
    let id = created.json()["id"].as_str().unwrap_or_default().to_owned();
    let vault = api
        .vault_create("W", "suite-vault", &BTreeMap::from([("K", "vault-value")]))
        .await;
    checks.status(
        format!("[{config}] vault create with a valid token"),
        &vault,
        201,
    );
    let vault_id = vault.json()["id"].as_str().unwrap_or_default().to_owned();
    let r = api.decrypt(&id, "token suite").await;
    checks.status(format!("[{config}] decrypt with a valid token"), &r, 200);
    checks.eq(
        format!("[{config}] decrypted value"),
        r.json()["value"].as_str().map(str::to_owned),
        Some(value.clone()),
    );
    for (label, auth) in good_variants(good, &who) {
        let r = srv
            .req(Method::GET, "/secrets", auth.as_deref(), None, &[])
            .await;
        checks.status(format!("[{config}] good token ({label})"), &r, 200);
    }
    let listed_before = api.listed_ids("").await;
    let audit_before = srv.audit().await;
    checks.that(
        format!("[{config}] the valid requests were audited"),
        audit_before.len() >= 3,
    );

    // Every bad token: 401 on every kind of endpoint, and nothing happens.
    let body = |i: usize| json!({"name": format!("bad-{i}"), "value": "x", "scope_type": "global"});
    for (i, (label, auth)) in bad.iter().enumerate() {
        let label = format!("{config}: {label}");
        let a = auth.as_deref();
        let calls: Vec<Call<'_>> = vec![
            (Method::POST, "/secrets".into(), Some(body(i)), vec![]),
            (Method::GET, "/secrets".into(), None, vec![]),
            (Method::GET, format!("/secrets/{id}"), None, vec![]),
            (
                Method::POST,
                format!("/secrets/{id}/decrypt"),
                Some(json!({"reason": "bad token"})),
                vec![],
            ),
            (
                Method::PUT,
                format!("/secrets/{id}"),
                Some(json!({"value": "overwritten"})),
                vec![],
            ),
            (Method::DELETE, format!("/secrets/{id}"), None, vec![]),
            (
                Method::GET,
                format!("/secrets/vault/{vault_id}"),
                None,
                vec![("x-access-reason", "bad token")],
            ),
            (
                Method::PUT,
                format!("/secrets/vaults/{vault_id}/keys/K"),
                Some(json!({"value": "overwritten"})),
                vec![],
            ),
            (
                Method::DELETE,
                format!("/secrets/vaults/{vault_id}"),
                None,
                vec![],
            ),
            (Method::GET, "/admin/kek/status".into(), None, vec![]),
            (Method::POST, "/admin/kek/rewrap".into(), None, vec![]),
        ];
        for (method, path, body, headers) in calls {
            let r = srv.req(method, &path, a, body.as_ref(), &headers).await;
            check_401(&mut checks, &label, &r);
        }
    }

    // Proof that no handler ran: nothing new, nothing changed, nothing deleted, no audit row.
    let audit_after = srv.audit().await;
    checks.eq(
        format!("[{config}] audit rows written by bad tokens"),
        audit_after.len() - audit_before.len(),
        0,
    );
    let listed_after = api.listed_ids("").await;
    checks.eq(
        format!("[{config}] secrets listed after the bad tokens"),
        listed_after,
        listed_before,
    );
    let names: Vec<String> = api
        .list_all("")
        .await
        .unwrap_or_default()
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with("bad-"))
        .collect();
    checks.eq(
        format!("[{config}] secrets created by bad tokens"),
        names,
        vec![],
    );
    let r = api.decrypt(&id, "after the bad tokens").await;
    checks.eq(
        format!("[{config}] secret after the bad tokens (value, version)"),
        (
            r.json()["value"].as_str().map(str::to_owned),
            r.json()["version"].as_i64(),
        ),
        (Some(value), Some(1)),
    );
    let r = api.vault_values(&vault_id, "after the bad tokens").await;
    checks.eq(
        format!("[{config}] vault after the bad tokens"),
        r.json(),
        json!({"K": "vault-value"}),
    );
    checks
}

fn public_key_server_cases(
    key: &KeyPair,
    other: &KeyPair,
    who: &Who,
) -> Vec<(String, Option<String>)> {
    common_bad_cases(
        &key.signer(),
        &other.signer(),
        who,
        Some((&key.public_pem, &key.public_der)),
    )
}

/// A PEM-configured server of `kind`: valid tokens pass, all bad ones are refused, and tokens
/// of another algorithm (signed with a valid key of another kind) too.
async fn pem_token_checks(kind: KeyKind, stranger_kind: KeyKind) {
    let dir = rcrt_testkit::TempDir::new();
    let key = KeyPair::generate(dir.path(), "server", kind);
    let other = KeyPair::generate(dir.path(), "other", kind);
    let stranger = KeyPair::generate(dir.path(), "stranger", stranger_kind);
    let srv = Server::start(
        Backend::Sqlite,
        KeySource::PublicKeyFile(key.public_path.clone()),
    )
    .await;
    let who = Who::new("token-suite-user", "tenant-tokens", &ALL_ROLES, &["W"]);
    let mut bad = public_key_server_cases(&key, &other, &who);
    bad.push((
        format!("{:?} token to a {:?} server", stranger.alg(), key.alg()),
        bearer(&stranger.signer().sign(&who.claims())),
    ));
    bad.push((
        "HS256 token with a random 32-byte secret".into(),
        bearer(&Signer::hs256(uniq().repeat(3).as_bytes()).sign(&who.claims())),
    ));
    let config = format!("{:?} PEM", key.alg());
    let checks = token_suite(&srv, &config, &key.signer(), bad).await;
    eprintln!("{config}: {} checks passed", checks.passed());
    checks.finish(&config);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs256_pem_token_checks() {
    pem_token_checks(KeyKind::Rsa, KeyKind::Ed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_pem_token_checks() {
    pem_token_checks(KeyKind::Ec, KeyKind::Ed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eddsa_pem_token_checks() {
    pem_token_checks(KeyKind::Ed, KeyKind::Ec).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hs256_secret_file_token_checks() {
    let dir = rcrt_testkit::TempDir::new();
    let secret = format!("{}{}{}", uniq(), uniq(), uniq()); // 36 bytes
    let path = dir.path().join("hs256.secret");
    // A trailing newline, as `echo ... > file` writes it: the server trims it.
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    let srv = Server::start(Backend::Sqlite, KeySource::Hs256SecretFile(path)).await;
    let good = Signer::hs256(secret.as_bytes());
    let foreign = Signer::hs256(format!("{secret}-but-another-one").as_bytes());
    let who = Who::new("token-suite-user", "tenant-tokens", &ALL_ROLES, &["W"]);
    let mut bad = common_bad_cases(&good, &foreign, &who, None);
    let ed = KeyPair::generate(dir.path(), "ed", KeyKind::Ed);
    bad.push((
        "EdDSA token to an HS256 server".into(),
        bearer(&ed.signer().sign(&who.claims())),
    ));
    bad.push((
        "HS256 signed with a prefix of the secret".into(),
        bearer(&Signer::hs256(&secret.as_bytes()[..32]).sign(&who.claims())),
    ));
    let checks = token_suite(&srv, "HS256 secret file", &good, bad).await;
    eprintln!("HS256: {} checks passed", checks.passed());
    checks.finish("HS256 secret file");
}

/// RS256 (and ES256/EdDSA) keys from a JWKS URL: the token checks, keys the JWKS must not
/// yield (an RSA key declaring HS256, a symmetric `oct` key), and the unknown-`kid` refetch:
/// at most one fetch per 10 s, after which a newly published key is accepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_token_checks_and_kid_refetch() {
    let dir = rcrt_testkit::TempDir::new();
    let rsa1 = KeyPair::generate(dir.path(), "rsa1", KeyKind::Rsa);
    let rsa2 = KeyPair::generate(dir.path(), "rsa2", KeyKind::Rsa);
    let other = KeyPair::generate(dir.path(), "other", KeyKind::Rsa);
    let ec = KeyPair::generate(dir.path(), "ec1", KeyKind::Ec);
    let ed = KeyPair::generate(dir.path(), "ed1", KeyKind::Ed);
    let hmac_secret = format!("{}{}{}", uniq(), uniq(), uniq());
    let mut rsa_as_hs = rsa1.jwk("rsa1-declared-hs256");
    rsa_as_hs["alg"] = json!("HS256");
    let jwks = JwksServer::start(vec![
        rsa1.jwk("rsa1"),
        ec.jwk("ec1"),
        ed.jwk("ed1"),
        rsa_as_hs,
        json!({"kty": "oct", "kid": "hmac1", "alg": "HS256", "k": b64url(hmac_secret.as_bytes())}),
    ])
    .await;
    let srv = Server::start(Backend::Sqlite, KeySource::Jwks(jwks.url.clone())).await;
    let who = Who::new("token-suite-user", "tenant-tokens", &ALL_ROLES, &["W"]);
    let good = rsa1.signer().with_kid("rsa1");
    let mut checks = Checks::default();
    let get = |token: String| {
        let auth = format!("Bearer {token}");
        let srv = &srv;
        async move {
            srv.req(Method::GET, "/secrets", Some(&auth), None, &[])
                .await
        }
    };

    // The first authenticated request fetches the key set.
    checks.eq("JWKS fetches before any request", jwks.hits(), 0);
    let t0 = Instant::now();
    let r = get(good.sign(&who.claims())).await;
    checks.status("RS256 token with a JWKS kid", &r, 200);
    checks.eq("JWKS fetches after the first request", jwks.hits(), 1);

    // kid "rsa2" is not published yet: refused, and within 10 s no refetch happens.
    let new_signer = rsa2.signer().with_kid("rsa2");
    let r = get(new_signer.sign(&who.claims())).await;
    check_401(&mut checks, "unknown kid rsa2", &r);
    checks.eq(
        "JWKS fetches after an unknown kid (rate limited)",
        jwks.hits(),
        1,
    );
    jwks.add_key(rsa2.jwk("rsa2"));
    let r = get(new_signer.sign(&who.claims())).await;
    check_401(
        &mut checks,
        "kid rsa2 published, inside the 10 s window",
        &r,
    );
    checks.eq("JWKS fetches inside the 10 s window", jwks.hits(), 1);

    // The other key types from the JWKS verify their own algorithm.
    let r = get(ec.signer().with_kid("ec1").sign(&who.claims())).await;
    checks.status("ES256 token with a JWKS kid", &r, 200);
    let r = get(ed.signer().with_kid("ed1").sign(&who.claims())).await;
    checks.status("EdDSA token with a JWKS kid", &r, 200);

    // The token checks, plus what only a JWKS can get wrong.
    let mut bad = common_bad_cases(
        &good,
        &other.signer().with_kid("rsa1"),
        &who,
        Some((&rsa1.public_pem, &rsa1.public_der)),
    );
    bad.extend([
        (
            "no kid".to_owned(),
            bearer(&good.clone().without_kid().sign(&who.claims())),
        ),
        (
            "a kid nobody published".to_owned(),
            bearer(&other.signer().with_kid("nobody").sign(&who.claims())),
        ),
        (
            "RS256 signature under the EC key's kid".to_owned(),
            bearer(&rsa1.signer().with_kid("ec1").sign(&who.claims())),
        ),
        (
            "ES256 signature under the RSA key's kid".to_owned(),
            bearer(&ec.signer().with_kid("rsa1").sign(&who.claims())),
        ),
        (
            "RSA JWK declaring alg HS256".to_owned(),
            bearer(
                &rsa1
                    .signer()
                    .with_kid("rsa1-declared-hs256")
                    .sign(&who.claims()),
            ),
        ),
        (
            "HS256 with the public PEM under the RSA-declared-HS256 kid".to_owned(),
            bearer(
                &Signer::hs256(&rsa1.public_pem)
                    .with_kid("rsa1-declared-hs256")
                    .sign(&who.claims()),
            ),
        ),
        (
            "HS256 with a symmetric JWK (kty oct)".to_owned(),
            bearer(
                &Signer::hs256(hmac_secret.as_bytes())
                    .with_kid("hmac1")
                    .sign(&who.claims()),
            ),
        ),
    ]);
    let suite = token_suite(&srv, "RS256 JWKS", &good, bad).await;

    // Once the 10 s window allows, the unknown kid makes the server refetch and accept rsa2.
    let hits_before_wait = jwks.hits();
    let deadline = t0 + Duration::from_secs(30);
    let accepted_after = loop {
        let r = get(new_signer.sign(&who.claims())).await;
        if r.status == 200 {
            break Some(t0.elapsed());
        }
        if Instant::now() > deadline {
            checks.that(
                format!("kid rsa2 never accepted within 30 s: {}", r.ctx()),
                false,
            );
            break None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if let Some(after) = accepted_after {
        eprintln!(
            "JWKS: rsa2 accepted {:.1} s after the first fetch; fetches: {} (before the wait: {hits_before_wait})",
            after.as_secs_f64(),
            jwks.hits()
        );
        checks.that(
            format!("rsa2 accepted only after the 10 s window (after {after:?})"),
            after >= Duration::from_secs(10),
        );
        checks.that(
            format!("the JWKS server saw a refetch (fetches: {})", jwks.hits()),
            jwks.hits() >= 2,
        );
        // Keys of the old set still verify after the refetch.
        let r = get(good.sign(&who.claims())).await;
        checks.status("rsa1 after the refetch", &r, 200);
    }
    eprintln!(
        "JWKS: {} + {} checks passed",
        suite.passed(),
        checks.passed()
    );
    suite.finish("RS256 JWKS token checks");
    checks.finish("JWKS kid refetch");
}

/// A key the identity provider stops publishing stops working once the cached key set is stale
/// (its `max-age`, at least 10 s), while the keys still published keep working; a key set larger
/// than 256 KiB is not read at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_removed_keys_expire_and_oversized_sets_are_refused() {
    let dir = rcrt_testkit::TempDir::new();
    let rsa1 = KeyPair::generate(dir.path(), "rsa1", KeyKind::Rsa);
    let rsa2 = KeyPair::generate(dir.path(), "rsa2", KeyKind::Rsa);
    let jwks = JwksServer::start_with_cache_control(
        vec![rsa1.jwk("rsa1"), rsa2.jwk("rsa2")],
        Some("public, max-age=0"),
    )
    .await;
    let srv = Server::start(Backend::Sqlite, KeySource::Jwks(jwks.url.clone())).await;
    let who = Who::new("jwks-user", "tenant-jwks", &ALL_ROLES, &["W"]);
    let get = |signer: Signer| {
        let auth = format!("Bearer {}", signer.sign(&who.claims()));
        let srv = &srv;
        async move {
            srv.req(Method::GET, "/secrets", Some(&auth), None, &[])
                .await
        }
    };
    get(rsa1.signer().with_kid("rsa1")).await.expect(200);
    get(rsa2.signer().with_kid("rsa2")).await.expect(200);
    let removed = Instant::now();
    jwks.remove_key("rsa2");
    let refused_after = loop {
        let r = get(rsa2.signer().with_kid("rsa2")).await;
        if r.status == 401 {
            break removed.elapsed();
        }
        assert_eq!(r.status, 200, "{}", r.ctx());
        assert!(
            removed.elapsed() < Duration::from_secs(25),
            "a removed key still works after {:?}",
            removed.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    eprintln!("JWKS: removed key refused after {refused_after:?}");
    assert!(jwks.hits() >= 2, "the stale set was fetched again");
    get(rsa1.signer().with_kid("rsa1")).await.expect(200);

    // An oversized key set (padding keys past 256 KiB) is not loaded: nothing verifies.
    let mut padded = vec![rsa1.jwk("rsa1")];
    for i in 0..800 {
        padded.push(rsa2.jwk(&format!("pad-{i}")));
    }
    let big = JwksServer::start(padded).await;
    let srv2 = Server::start(Backend::Sqlite, KeySource::Jwks(big.url.clone())).await;
    let auth = format!(
        "Bearer {}",
        rsa1.signer().with_kid("rsa1").sign(&who.claims())
    );
    let r = srv2
        .req(Method::GET, "/secrets", Some(&auth), None, &[])
        .await;
    assert_eq!(r.status, 401, "{}", r.ctx());
    assert_eq!(big.hits(), 1);
}

type Env<'a> = Vec<(&'a str, &'a str)>;

/// Misconfigured JWT settings stop the server at start-up instead of serving.
#[test]
fn jwt_misconfiguration_refuses_to_start() {
    let dir = rcrt_testkit::TempDir::new();
    let short = dir.path().join("short.secret");
    std::fs::write(&short, "0123456789012345678901234567890").unwrap(); // 31 bytes
    let long = dir.path().join("long.secret");
    std::fs::write(&long, "x".repeat(40)).unwrap();
    let ed = KeyPair::generate(dir.path(), "ed", KeyKind::Ed);
    let private = dir.path().join("ed.key");
    let (s, l, p) = (
        short.to_str().unwrap(),
        long.to_str().unwrap(),
        private.to_str().unwrap(),
    );
    let iss = ("JWT_ISSUER", auth_support::ISSUER);
    let aud = ("JWT_AUDIENCE", auth_support::AUDIENCE);
    // (what, environment, what the output must mention)
    let cases: Vec<(&str, Env<'_>, &str)> = vec![
        (
            "HS256 secret under 32 bytes",
            vec![iss, aud, ("JWT_HS256_SECRET_FILE", s)],
            "32 bytes",
        ),
        ("no key source", vec![iss, aud], "exactly one"),
        (
            "two key sources",
            vec![
                iss,
                aud,
                ("JWT_HS256_SECRET_FILE", l),
                ("JWT_PUBLIC_KEY_FILE", ed.public_path.to_str().unwrap()),
            ],
            "exactly one",
        ),
        (
            "no audience",
            vec![iss, ("JWT_HS256_SECRET_FILE", l)],
            "JWT_AUDIENCE",
        ),
        (
            "no issuer",
            vec![aud, ("JWT_HS256_SECRET_FILE", l)],
            "JWT_ISSUER",
        ),
        (
            "a private key as JWT_PUBLIC_KEY_FILE",
            vec![iss, aud, ("JWT_PUBLIC_KEY_FILE", p)],
            "JWT_PUBLIC_KEY_FILE",
        ),
        (
            "a missing key file",
            vec![iss, aud, ("JWT_PUBLIC_KEY_FILE", "/nonexistent/key.pem")],
            "JWT_PUBLIC_KEY_FILE",
        ),
    ];
    for (label, env, expect) in cases {
        let (status, out) = run_to_exit(&env);
        assert!(!status.success(), "{label}: started anyway:\n{out}");
        assert!(
            out.contains(expect),
            "{label}: output lacks {expect:?}:\n{out}"
        );
    }
}

// =============================================================================================
// 2. The access matrix
// =============================================================================================

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Read,
    Decrypt,
    Write,
    Admin,
    TokensCreate,
    Operator,
}

impl Role {
    fn claim(self) -> &'static str {
        match self {
            Self::Read => "secrets.read",
            Self::Decrypt => "secrets.decrypt",
            Self::Write => "secrets.write",
            Self::Admin => "secrets.admin",
            Self::TokensCreate => "tokens.create",
            Self::Operator => "rcrt.operator",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    /// List, metadata (secret and vault).
    Read,
    /// Secret decrypt, vault values.
    Decrypt,
    /// Create, update, delete (secrets, vaults, vault keys).
    Write,
}

/// Where the target secret lives, seen from the principal (a member of `W` only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    Global,
    MemberWs,
    OtherWs,
    OwnAgent,
    OtherAgent,
}

const TARGETS: [Target; 5] = [
    Target::Global,
    Target::MemberWs,
    Target::OtherWs,
    Target::OwnAgent,
    Target::OtherAgent,
];
const MEMBER_WS: &str = "W";
const OTHER_WS: &str = "W2";
const OTHER_AGENT: &str = "agent-someone-else";

impl Target {
    /// (scope_type, scope_id) for the principal `sub`.
    fn scope(self, sub: &str) -> (&'static str, Option<String>) {
        match self {
            Self::Global => ("global", None),
            Self::MemberWs => ("workspace", Some(MEMBER_WS.into())),
            Self::OtherWs => ("workspace", Some(OTHER_WS.into())),
            Self::OwnAgent => ("agent", Some(sub.into())),
            Self::OtherAgent => ("agent", Some(OTHER_AGENT.into())),
        }
    }

    fn short(self) -> &'static str {
        match self {
            Self::Global => "global",
            Self::MemberWs => "ws-member",
            Self::OtherWs => "ws-other",
            Self::OwnAgent => "agent-own",
            Self::OtherAgent => "agent-other",
        }
    }
}

/// The access table of `rcrt_core::authz` (the README's), restated for the test:
///
/// | action                          | role              | global     | workspace W                 | agent A                |
/// |---------------------------------|-------------------|------------|-----------------------------|------------------------|
/// | list, read metadata             | `secrets.read`    | yes        | W in `workspaces`, or admin | A = `sub`, or admin    |
/// | decrypt (secrets and vaults)    | `secrets.decrypt` | yes        | same                        | same                   |
/// | create, update, delete          | `secrets.write`   | admin only | same                        | same                   |
/// | KEK status and re-wrap          | `rcrt.operator`   |            |                             |                        |
///
/// Every action needs its own role (admin does not imply read, decrypt or write; decrypt does
/// not imply read); `secrets.admin` widens the reach to every scope of the tenant and allows
/// global writes.
fn allowed(roles: &[Role], act: Act, target: Target) -> bool {
    let admin = roles.contains(&Role::Admin);
    let needed = match act {
        Act::Read => Role::Read,
        Act::Decrypt => Role::Decrypt,
        Act::Write => Role::Write,
    };
    let reaches = admin
        || match target {
            Target::Global | Target::MemberWs | Target::OwnAgent => true,
            Target::OtherWs | Target::OtherAgent => false,
        };
    roles.contains(&needed) && reaches && !(act == Act::Write && target == Target::Global && !admin)
}

/// The status for an operation on an existing secret or vault: denial looks like absence.
fn on_existing(ok: u16, allowed: bool) -> u16 {
    if allowed {
        ok
    } else {
        404
    }
}

/// The status for a create (or a list): denial is a 403.
fn on_create(ok: u16, allowed: bool) -> u16 {
    if allowed {
        ok
    } else {
        403
    }
}

/// Whether an item of a listing is one `roles`/`sub` (member of `W`) may see.
fn listed_item_visible(roles: &[Role], sub: &str, item: &Value) -> bool {
    let target = match (item["scope_type"].as_str(), item["scope_id"].as_str()) {
        (Some("global"), _) => Target::Global,
        (Some("workspace"), Some(MEMBER_WS)) => Target::MemberWs,
        (Some("workspace"), _) => Target::OtherWs,
        (Some("agent"), Some(a)) if a == sub => Target::OwnAgent,
        _ => Target::OtherAgent,
    };
    allowed(roles, Act::Read, target)
}

const ROLE_SETS: [(&str, &[Role]); 8] = [
    ("read", &[Role::Read]),
    ("decrypt", &[Role::Decrypt]),
    ("write", &[Role::Write]),
    (
        "read-decrypt-write",
        &[Role::Read, Role::Decrypt, Role::Write],
    ),
    ("admin", &[Role::Admin]),
    (
        "admin-read-decrypt-write",
        &[Role::Admin, Role::Read, Role::Decrypt, Role::Write],
    ),
    ("operator", &[Role::Operator]),
    ("read-tokens", &[Role::Read, Role::TokensCreate]),
];
const MATRIX_TENANT: &str = "tenant-matrix";

/// How the principals of a matrix authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cred {
    /// A JWT with the principal's claims.
    Jwt,
    /// A service token minted for the principal (same sub, tenant, roles, workspaces) by a JWT
    /// administrator of its tenant.
    Token,
}

struct MatrixEnv {
    _dir: rcrt_testkit::TempDir,
    srv: Server,
    signer: Signer,
    cred: Cred,
    minted: tokio::sync::Mutex<BTreeMap<(String, String), String>>,
}

impl MatrixEnv {
    async fn start(backend: Backend, cred: Cred) -> Self {
        let dir = rcrt_testkit::TempDir::new();
        let key = KeyPair::generate(dir.path(), "rsa", KeyKind::Rsa);
        let keys = KeySource::PublicKeyFile(key.public_path.clone());
        let srv = match cred {
            Cred::Jwt => Server::start(backend, keys).await,
            Cred::Token => Server::start_with(backend, keys, "jwt,token").await,
        };
        Self {
            signer: key.signer(),
            srv,
            _dir: dir,
            cred,
            minted: Default::default(),
        }
    }

    async fn api(&self, who: &Who) -> Api<'_> {
        let jwt = self.signer.sign(&who.claims());
        if self.cred == Cred::Jwt {
            return self.srv.as_token(&jwt);
        }
        let key = (who.owner.clone(), who.sub.clone());
        let mut minted = self.minted.lock().await;
        if let Some(t) = minted.get(&key) {
            return self.srv.as_token(t);
        }
        let minter = Who::new("token-minter", &who.owner, &ALL_ROLES, &[]);
        let body = json!({
            "name": format!("matrix {}", who.sub),
            "principal": who.sub,
            "roles": who.roles,
            "workspaces": who.workspaces,
            "ttl": "1h",
        });
        let r = self
            .srv
            .as_token(&self.signer.sign(&minter.claims()))
            .post("/auth/tokens", &body)
            .await
            .expect(201);
        let token = r.json()["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("rcrt_"), "{}", r.ctx());
        minted.insert(key, token.clone());
        self.srv.as_token(&token)
    }
}

fn principal(i: usize, label: &str, roles: &[Role]) -> Who {
    let claims: Vec<&'static str> = roles.iter().map(|r| r.claim()).collect();
    Who::new(
        &format!("p{i}-{label}"),
        MATRIX_TENANT,
        &claims,
        &[MEMBER_WS],
    )
}

/// A seeded secret: (id, value).
type Seed = (String, String);

/// Creates one secret per (role set, target) as an all-powerful admin; names start `prefix`.
async fn seed_matrix(seeder: &Api<'_>, prefix: &str) -> BTreeMap<(usize, Target), Seed> {
    let mut seeds = BTreeMap::new();
    for (i, (label, roles)) in ROLE_SETS.iter().enumerate() {
        let who = principal(i, label, roles);
        for t in TARGETS {
            let (st, sid) = t.scope(&who.sub);
            let value = format!("{prefix}-value-{}", uniq());
            let id = seeder
                .create_ok(
                    &format!("{prefix}{i}-{}", t.short()),
                    &value,
                    st,
                    sid.as_deref(),
                )
                .await;
            seeds.insert((i, t), (id, value));
        }
    }
    seeds
}

/// Role sets × scopes × list / metadata / decrypt / create, vault list / metadata / values / key
/// put / key delete / create in a member and a non-member workspace, the KEK endpoints and tokens.
async fn authz_matrix(cred: Cred) {
    let env = MatrixEnv::start(Backend::Sqlite, cred).await;
    let seeder_who = Who::new("seeder", MATRIX_TENANT, &ALL_ROLES, &[]);
    let seeder = env.api(&seeder_who).await;
    let seeds = seed_matrix(&seeder, "m").await;

    // Two vaults: in W (members) and W2 (nobody's); key D<i> is for role set i to delete.
    let mut vault_ids = BTreeMap::new();
    for (t, ws) in [(Target::MemberWs, MEMBER_WS), (Target::OtherWs, OTHER_WS)] {
        let mut keys: BTreeMap<String, String> = BTreeMap::from([("K".into(), format!("k-{ws}"))]);
        for i in 0..ROLE_SETS.len() {
            keys.insert(format!("D{i}"), format!("d{i}-{ws}"));
        }
        let keys_ref: BTreeMap<&str, &str> =
            keys.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = seeder
            .vault_create(ws, &format!("vault-{ws}"), &keys_ref)
            .await
            .expect(201);
        vault_ids.insert(t, r.json()["id"].as_str().unwrap().to_owned());
    }

    let mut checks = Checks::default();
    let mut expected_decrypt_audit: Vec<(String, String, &str)> = Vec::new();
    for (i, (label, roles)) in ROLE_SETS.iter().enumerate() {
        let who = principal(i, label, roles);
        let api = env.api(&who).await;
        let cell = |t: Target, op: &str| format!("{label} × {} × {op}", t.short());
        let missing = api.get(&Uuid::new_v4().to_string()).await.json();

        // List: 403 without secrets.read; otherwise exactly what the table lets it see.
        let listed = api.list_all("").await;
        match listed {
            Err(r) => {
                checks.status(
                    format!("{label} × list"),
                    &r,
                    on_create(200, roles.contains(&Role::Read)),
                );
                checks.eq(
                    format!("{label} × list error code"),
                    r.code(),
                    "forbidden".into(),
                );
            }
            Ok(items) => {
                checks.that(
                    format!("{label} × list allowed without secrets.read"),
                    roles.contains(&Role::Read),
                );
                let ids: BTreeSet<&str> = items.iter().filter_map(|v| v["id"].as_str()).collect();
                for t in TARGETS {
                    let (id, _) = &seeds[&(i, t)];
                    checks.eq(
                        cell(t, "listed"),
                        ids.contains(id.as_str()),
                        allowed(roles, Act::Read, t),
                    );
                }
                for item in &items {
                    checks.that(
                        format!("{label} × list shows {item} which it may not read"),
                        listed_item_visible(roles, &who.sub, item),
                    );
                }
                // A filter on a workspace it does not belong to shows nothing (unless admin).
                let other = api
                    .list_all(&format!("&scope_type=workspace&scope_id={OTHER_WS}"))
                    .await
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                checks.eq(
                    format!("{label} × list filtered to {OTHER_WS} is empty"),
                    other == 0,
                    !roles.contains(&Role::Admin),
                );
            }
        }

        for t in TARGETS {
            let (id, value) = &seeds[&(i, t)];
            // Metadata.
            let r = api.get(id).await;
            let ok = allowed(roles, Act::Read, t);
            checks.status(cell(t, "get metadata"), &r, on_existing(200, ok));
            if !ok {
                checks.eq(
                    cell(t, "get metadata body = missing"),
                    r.json(),
                    missing.clone(),
                );
            }
            // Decrypt.
            let r = api.decrypt(id, &format!("matrix {label}")).await;
            let ok = allowed(roles, Act::Decrypt, t);
            checks.status(cell(t, "decrypt"), &r, on_existing(200, ok));
            if ok {
                checks.eq(
                    cell(t, "decrypted value"),
                    r.json()["value"].as_str(),
                    Some(value.as_str()),
                );
            } else {
                checks.eq(cell(t, "decrypt body = missing"), r.json(), missing.clone());
            }
            expected_decrypt_audit.push((
                id.clone(),
                who.sub.clone(),
                if ok { "success" } else { "denied" },
            ));
            // Create in that scope.
            let (st, sid) = t.scope(&who.sub);
            let r = api
                .create(
                    &format!("c{i}-{}", t.short()),
                    "created",
                    st,
                    sid.as_deref(),
                )
                .await;
            let ok = allowed(roles, Act::Write, t);
            checks.status(cell(t, "create"), &r, on_create(201, ok));
            if !ok {
                checks.eq(cell(t, "create error code"), r.code(), "forbidden".into());
            }
        }

        // Vault listing: 403 without secrets.read; otherwise exactly the vaults of the
        // workspaces it may read (the seeded two, and those earlier role sets created).
        match api.vault_list_all("", 1000).await {
            Err(r) => {
                checks.status(
                    format!("{label} × list vaults"),
                    &r,
                    on_create(200, roles.contains(&Role::Read)),
                );
                checks.eq(
                    format!("{label} × list vaults error code"),
                    r.code(),
                    "forbidden".into(),
                );
            }
            Ok(items) => {
                checks.that(
                    format!("{label} × list vaults allowed without secrets.read"),
                    roles.contains(&Role::Read),
                );
                let ids: BTreeSet<&str> = items.iter().filter_map(|v| v["id"].as_str()).collect();
                for t in [Target::MemberWs, Target::OtherWs] {
                    checks.eq(
                        cell(t, "vault listed"),
                        ids.contains(vault_ids[&t].as_str()),
                        allowed(roles, Act::Read, t),
                    );
                }
                for item in &items {
                    let t = if item["workspace"] == MEMBER_WS {
                        Target::MemberWs
                    } else {
                        Target::OtherWs
                    };
                    checks.that(
                        format!("{label} × vault list shows {item} which it may not read"),
                        allowed(roles, Act::Read, t),
                    );
                }
                let other = api
                    .vault_list_all(&format!("&workspace={OTHER_WS}"), 1000)
                    .await
                    .map(|v| v.len())
                    .unwrap_or(usize::MAX);
                checks.eq(
                    format!("{label} × vault list filtered to {OTHER_WS} is empty"),
                    other == 0,
                    !roles.contains(&Role::Admin),
                );
            }
        }

        // Vaults in the member workspace W and the non-member workspace W2.
        for (t, ws) in [(Target::MemberWs, MEMBER_WS), (Target::OtherWs, OTHER_WS)] {
            let vid = &vault_ids[&t];
            let r = api.vault_meta(vid).await;
            checks.status(
                cell(t, "vault metadata"),
                &r,
                on_existing(200, allowed(roles, Act::Read, t)),
            );
            let r = api.vault_values(vid, &format!("matrix {label}")).await;
            let ok = allowed(roles, Act::Decrypt, t);
            checks.status(cell(t, "vault values"), &r, on_existing(200, ok));
            if ok {
                checks.eq(
                    cell(t, "vault value K"),
                    r.json()["K"].as_str().map(str::to_owned),
                    Some(format!("k-{ws}")),
                );
            }
            let ok = allowed(roles, Act::Write, t);
            let r = api.vault_put(vid, &format!("N{i}"), "new").await;
            checks.status(cell(t, "vault key put"), &r, on_existing(200, ok));
            let r = api.vault_delete_key(vid, &format!("D{i}")).await;
            checks.status(cell(t, "vault key delete"), &r, on_existing(204, ok));
            let keys = BTreeMap::from([("K", "v")]);
            let r = api.vault_create(ws, &format!("v{i}"), &keys).await;
            checks.status(cell(t, "vault create"), &r, on_create(201, ok));
        }

        // KEK endpoints: the deployment's operator only, never a tenant admin as such.
        let operator = roles.contains(&Role::Operator);
        let r = api.kek_status().await;
        checks.status(
            format!("{label} × GET /admin/kek/status"),
            &r,
            on_create(200, operator),
        );
        let r = api.kek_rewrap().await;
        checks.status(
            format!("{label} × POST /admin/kek/rewrap"),
            &r,
            on_create(202, operator),
        );

        // Tokens: minting one with its own roles needs secrets.admin or tokens.create; one
        // with a role it lacks is refused to everyone; the listing never shows a secret.
        let may_mint = roles.contains(&Role::Admin) || roles.contains(&Role::TokensCreate);
        let own: Vec<&str> = roles.iter().map(|r| r.claim()).collect();
        let r = api
            .post(
                "/auth/tokens",
                &json!({"name": format!("own {label}"), "roles": own, "ttl": 600}),
            )
            .await;
        checks.status(
            format!("{label} × mint own roles"),
            &r,
            on_create(201, may_mint),
        );
        let lacking = [
            Role::Read,
            Role::Decrypt,
            Role::Write,
            Role::Admin,
            Role::Operator,
        ]
        .into_iter()
        .find(|r| !roles.contains(r))
        .map(Role::claim)
        .unwrap_or("rcrt.operator");
        let r = api
            .post(
                "/auth/tokens",
                &json!({"name": "broader", "roles": [lacking], "ttl": 600}),
            )
            .await;
        checks.status(format!("{label} × mint {lacking}"), &r, 403);
        let r = api.get_path("/auth/tokens").await;
        checks.status(format!("{label} × list tokens"), &r, 200);
        checks.that(
            format!("{label} × token listing carries no token"),
            !r.text.contains("rcrt_") && r.json()["items"].is_array(),
        );
    }

    // What the denied writes did not do, and what the allowed ones did.
    for (t, _) in [(Target::MemberWs, MEMBER_WS), (Target::OtherWs, OTHER_WS)] {
        let keys: BTreeSet<String> = seeder.vault_meta(&vault_ids[&t]).await.expect(200).json()
            ["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k.as_str().unwrap().to_owned())
            .collect();
        for (i, (label, roles)) in ROLE_SETS.iter().enumerate() {
            let ok = allowed(roles, Act::Write, t);
            checks.eq(
                format!("{label} × {} × key N{i} exists afterwards", t.short()),
                keys.contains(&format!("N{i}")),
                ok,
            );
            checks.eq(
                format!("{label} × {} × key D{i} exists afterwards", t.short()),
                keys.contains(&format!("D{i}")),
                !ok,
            );
        }
    }
    let names: BTreeSet<String> = seeder
        .list_all("")
        .await
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_owned())
        .collect();
    for (i, (label, roles)) in ROLE_SETS.iter().enumerate() {
        for t in TARGETS {
            checks.eq(
                format!("{label} × {} × created secret exists afterwards", t.short()),
                names.contains(&format!("c{i}-{}", t.short())),
                allowed(roles, Act::Write, t),
            );
        }
    }

    // Each decrypt attempt left its audit row: success, or denied for an existing secret.
    let audit = env.srv.audit().await;
    for (id, user, outcome) in &expected_decrypt_audit {
        checks.that(
            format!("audit row decrypt/{outcome} for {user} on {id}"),
            audit.iter().any(|a| {
                a.action == "decrypt"
                    && a.secret_id.as_deref() == Some(id.as_str())
                    && a.user_id == *user
                    && a.tenant == MATRIX_TENANT
                    && a.outcome == *outcome
            }),
        );
    }
    eprintln!("authz matrix ({cred:?}): {} checks passed", checks.passed());
    checks.finish("authz matrix");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_matrix_jwt() {
    authz_matrix(Cred::Jwt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_matrix_token() {
    authz_matrix(Cred::Token).await;
}

/// Update and delete of existing secrets across the same matrix: allowed → 200 / 204,
/// otherwise 404 and the secret untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_matrix_update_delete() {
    let env = MatrixEnv::start(Backend::Sqlite, Cred::Token).await;
    let seeder = env
        .api(&Who::new("seeder", MATRIX_TENANT, &ALL_ROLES, &[]))
        .await;
    let updates = seed_matrix(&seeder, "u").await;
    let deletes = seed_matrix(&seeder, "d").await;
    let mut checks = Checks::default();
    for (i, (label, roles)) in ROLE_SETS.iter().enumerate() {
        let api = env.api(&principal(i, label, roles)).await;
        for t in TARGETS {
            let ok = allowed(roles, Act::Write, t);
            let cell = |op: &str| format!("{label} × {} × {op}", t.short());
            let (uid, uvalue) = &updates[&(i, t)];
            let r = api.update(uid, "changed by the matrix").await;
            checks.status(cell("update"), &r, on_existing(200, ok));
            let after = seeder.decrypt(uid, "matrix check").await.json();
            let expected = if ok {
                ("changed by the matrix".to_owned(), 2)
            } else {
                (uvalue.clone(), 1)
            };
            checks.eq(
                cell("secret after update (value, version)"),
                (
                    after["value"].as_str().unwrap_or_default().to_owned(),
                    after["version"].as_i64().unwrap_or_default(),
                ),
                expected,
            );
            let (did, _) = &deletes[&(i, t)];
            let r = api.delete(did).await;
            checks.status(cell("delete"), &r, on_existing(204, ok));
            let exists = seeder.get(did).await.status == 200;
            checks.eq(cell("secret exists after delete"), exists, !ok);
        }
    }
    eprintln!("update/delete matrix: {} checks passed", checks.passed());
    // This matrix caught `Service::update`/`Service::delete` skipping `authz::allows` (fixed).
    checks.finish("update/delete matrix");
}

/// The lifecycle routes across the same matrix: listing versions (`secrets.read`), decrypting
/// an old version (`secrets.decrypt`), patching metadata, rolling back, destroying a version,
/// soft-deleting and restoring (`secrets.write`): allowed → their success status, otherwise 404
/// and the secret untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authz_matrix_lifecycle() {
    let env = MatrixEnv::start(Backend::Sqlite, Cred::Token).await;
    let seeder = env
        .api(&Who::new("seeder", MATRIX_TENANT, &ALL_ROLES, &[]))
        .await;
    let seeds = seed_matrix(&seeder, "l").await;
    for (id, _) in seeds.values() {
        seeder.update(id, "second").await.expect(200);
    }
    let mut checks = Checks::default();
    for (i, (label, roles)) in ROLE_SETS.iter().enumerate() {
        let api = env.api(&principal(i, label, roles)).await;
        for t in TARGETS {
            let (id, first) = &seeds[&(i, t)];
            let cell = |op: &str| format!("{label} × {} × {op}", t.short());
            let read = allowed(roles, Act::Read, t);
            let decrypt = allowed(roles, Act::Decrypt, t);
            let write = allowed(roles, Act::Write, t);

            let r = api
                .send(Method::GET, &format!("/secrets/{id}/versions"), None)
                .await;
            checks.status(cell("versions"), &r, on_existing(200, read));
            if r.status == 200 {
                checks.eq(
                    cell("versions listed"),
                    r.json()["versions"].as_array().map_or(0, Vec::len),
                    2,
                );
            }

            let r = api
                .send(
                    Method::POST,
                    &format!("/secrets/{id}/decrypt"),
                    Some(&json!({"reason": "matrix", "version": 1})),
                )
                .await;
            checks.status(cell("decrypt version 1"), &r, on_existing(200, decrypt));
            if r.status == 200 {
                checks.eq(
                    cell("version 1 value"),
                    r.json()["value"].as_str().unwrap_or_default().to_owned(),
                    first.clone(),
                );
            }

            let r = api
                .send(
                    Method::PATCH,
                    &format!("/secrets/{id}"),
                    Some(&json!({"description": "patched by the matrix"})),
                )
                .await;
            checks.status(cell("patch"), &r, on_existing(200, write));
            let meta = seeder.get(id).await.json();
            checks.eq(
                cell("description after patch"),
                meta["description"] == "patched by the matrix",
                write,
            );

            let r = api
                .send(
                    Method::POST,
                    &format!("/secrets/{id}/rollback"),
                    Some(&json!({"version": 1})),
                )
                .await;
            checks.status(cell("rollback"), &r, on_existing(200, write));
            checks.eq(
                cell("version after rollback"),
                seeder.get(id).await.json()["version"].as_i64(),
                Some(if write { 3 } else { 2 }),
            );

            let r = api
                .send(
                    Method::POST,
                    &format!("/secrets/{id}/versions/1/destroy"),
                    None,
                )
                .await;
            checks.status(cell("destroy version 1"), &r, on_existing(204, write));
            let v1 = seeder
                .send(
                    Method::POST,
                    &format!("/secrets/{id}/decrypt"),
                    Some(&json!({"reason": "matrix check", "version": 1})),
                )
                .await;
            checks.eq(
                cell("version 1 after destroy"),
                v1.status,
                if write { 410 } else { 200 },
            );

            let r = api
                .send(
                    Method::DELETE,
                    &format!("/secrets/{id}?recovery_window=1d"),
                    None,
                )
                .await;
            checks.status(cell("soft delete"), &r, on_existing(200, write));
            checks.eq(
                cell("visible after soft delete"),
                seeder.get(id).await.status,
                if write { 404 } else { 200 },
            );
            let r = api
                .send(Method::POST, &format!("/secrets/{id}/restore"), None)
                .await;
            checks.status(cell("restore"), &r, on_existing(200, write));
            checks.eq(
                cell("visible after restore"),
                seeder.get(id).await.status,
                200,
            );
        }
    }
    eprintln!("lifecycle matrix: {} checks passed", checks.passed());
    checks.finish("lifecycle matrix");
}

// =============================================================================================
// 3. Tenant and workspace isolation (SQLite and PostgreSQL); 4. audit identity
// =============================================================================================

struct Seeded {
    /// (id, value) of A's standalone secrets.
    secrets: Vec<(String, String)>,
    vault_id: String,
    vault_values: BTreeMap<String, String>,
    /// Every id A has (standalone and vault secrets).
    all_ids: BTreeSet<String>,
}

async fn seed_tenant_a(a: &Api<'_>, sub: &str) -> Seeded {
    let mut secrets = Vec::new();
    for (name, st, sid) in [
        ("db-password", "global", None),
        ("w-secret", "workspace", Some(MEMBER_WS)),
        ("agent-secret", "agent", Some(sub)),
    ] {
        let value = format!("a-{name}-{}", uniq());
        let id = a.create_ok(name, &value, st, sid).await;
        secrets.push((id, value));
    }
    let vault_values: BTreeMap<String, String> = [
        ("DB_PASSWORD".to_owned(), format!("a-vault-db-{}", uniq())),
        ("API_KEY".to_owned(), format!("a-vault-api-{}", uniq())),
    ]
    .into();
    let refs: BTreeMap<&str, &str> = vault_values
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let vault_id = a
        .vault_create(MEMBER_WS, "app", &refs)
        .await
        .expect(201)
        .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let all_ids = a.listed_ids("").await;
    assert_eq!(all_ids.len(), 5, "A's three secrets and two vault keys");
    Seeded {
        secrets,
        vault_id,
        vault_values,
        all_ids,
    }
}

/// A's data is exactly as seeded: every value and version 1, the vault's keys and values.
async fn check_unchanged(checks: &mut Checks, what: &str, a: &Api<'_>, s: &Seeded) {
    for (id, value) in &s.secrets {
        let r = a.decrypt(id, "isolation check").await;
        checks.eq(
            format!("{what}: A's secret {id} (value, version)"),
            (
                r.json()["value"].as_str().map(str::to_owned),
                r.json()["version"].as_i64(),
            ),
            (Some(value.clone()), Some(1)),
        );
    }
    let r = a.vault_values(&s.vault_id, "isolation check").await;
    checks.eq(
        format!("{what}: A's vault values"),
        r.json(),
        serde_json::to_value(&s.vault_values).unwrap(),
    );
    checks.eq(
        format!("{what}: A's secret ids"),
        a.listed_ids("").await,
        s.all_ids.clone(),
    );
}

/// Every read/write probe of `prober` on A's data must look like absence.
async fn probe_all_missing(checks: &mut Checks, who: &str, p: &Api<'_>, s: &Seeded, reason: &str) {
    let missing = p.get(&Uuid::new_v4().to_string()).await.json();
    checks.eq(
        format!("{who}: missing-secret body"),
        missing["error"]["code"].as_str(),
        Some("not_found"),
    );
    for id in &s.all_ids {
        for r in [p.get(id).await, p.decrypt(id, reason).await] {
            checks.status(format!("{who}: {}", r.what), &r, 404);
            checks.eq(format!("{who}: {} body", r.what), r.json(), missing.clone());
        }
    }
    for target in [s.vault_id.clone(), "app".to_owned()] {
        let rs = [
            p.vault_meta(&target).await,
            p.vault_meta(&format!("{target}?workspace={MEMBER_WS}"))
                .await,
            p.vault_values(&target, reason).await,
            p.vault_values(&format!("{target}?workspace={MEMBER_WS}"), reason)
                .await,
            p.vault_put(&target, "DB_PASSWORD", "overwritten").await,
            p.vault_put(&target, "INJECTED", "injected").await,
            p.vault_delete_key(&target, "API_KEY").await,
            p.vault_delete(&target).await,
        ];
        for r in rs {
            checks.status(format!("{who}: {}", r.what), &r, 404);
        }
    }
}

fn audit_has(audit: &[AuditRow], f: impl Fn(&AuditRow) -> bool) -> bool {
    audit.iter().any(f)
}

async fn tenant_isolation(backend: Backend, cred: Cred) {
    let env = MatrixEnv::start(backend, cred).await;
    let a_who = Who::new("alice@a", "tenant-a", &ALL_ROLES, &[MEMBER_WS]);
    let a = env.api(&a_who).await;
    let s = seed_tenant_a(&a, &a_who.sub).await;
    let mut checks = Checks::default();

    // 4. A successful decrypt is audited with the token's sub and owner_id (and request id).
    let (id0, v0) = &s.secrets[0];
    let reason_a = format!("audit identity {}", uniq());
    let r = a.decrypt(id0, &reason_a).await.expect(200);
    checks.eq("A decrypts", r.json()["value"].as_str(), Some(v0.as_str()));
    let request_id = r.header("x-request-id");

    // Tenant B: same roles (admin too), same workspace names; B2 even has A's sub.
    let b_who = Who::new("bob@b", "tenant-b", &ALL_ROLES, &[MEMBER_WS]);
    let b2_who = Who::new(
        "alice@a",
        "tenant-b",
        &["secrets.read", "secrets.decrypt", "secrets.write"],
        &[MEMBER_WS],
    );
    let reason = format!("cross-tenant probe {}", uniq());
    for (name, who) in [("B", &b_who), ("B2 (A's sub, tenant B)", &b2_who)] {
        let p = env.api(who).await;
        for filter in [
            String::new(),
            format!("&scope_type=workspace&scope_id={MEMBER_WS}"),
            format!("&scope_type=agent&scope_id={}", a_who.sub),
            "&scope_type=global".to_owned(),
        ] {
            match p.list_all(&filter).await {
                Ok(items) => {
                    let leaked: Vec<&Value> = items
                        .iter()
                        .filter(|v| s.all_ids.contains(v["id"].as_str().unwrap_or_default()))
                        .collect();
                    checks.eq(
                        format!("{name}: list{filter} shows A's secrets"),
                        leaked.len(),
                        0,
                    );
                }
                Err(r) => checks.status(format!("{name}: list{filter}"), &r, 200),
            }
        }
        probe_all_missing(&mut checks, name, &p, &s, &reason).await;
        for id in &s.all_ids {
            let r = p.update(id, "overwritten by B").await;
            checks.status(format!("{name}: {}", r.what), &r, 404);
            let r = p.delete(id).await;
            checks.status(format!("{name}: {}", r.what), &r, 404);
        }
        let r = p.kek_status().await;
        checks.that(format!("{name}: kek status is not a 5xx"), r.status < 500);
    }

    // B's own secret and vault with A's names live side by side with A's.
    let b = env.api(&b_who).await;
    let b_value = format!("b-{}", uniq());
    let r = b.create("db-password", &b_value, "global", None).await;
    checks.status("B creates a secret with A's name", &r, 201);
    let r = b
        .vault_create(
            MEMBER_WS,
            "app",
            &BTreeMap::from([("DB_PASSWORD", b_value.as_str())]),
        )
        .await;
    checks.status("B creates a vault with A's workspace and name", &r, 201);
    let r = b.vault_values("app", "own vault").await;
    checks.eq(
        "B reads its own vault by name",
        r.json(),
        json!({"DB_PASSWORD": b_value}),
    );
    let r = b.vault_meta("app").await;
    checks.eq(
        "B's vault metadata keys",
        r.json()["keys"].clone(),
        json!(["DB_PASSWORD"]),
    );
    let r = a.vault_values("app", "own vault").await;
    checks.eq(
        "A reads its own vault by name",
        r.json(),
        serde_json::to_value(&s.vault_values).unwrap(),
    );

    check_unchanged(&mut checks, "after tenant B's probes", &a, &s).await;

    let audit = env.srv.audit().await;
    checks.that(
        format!("audit row of A's decrypt: user_id = sub alice@a, tenant = owner_id tenant-a, request id {request_id:?}"),
        audit_has(&audit, |r| {
            r.action == "decrypt"
                && r.outcome == "success"
                && r.secret_id.as_deref() == Some(id0.as_str())
                && r.user_id == "alice@a"
                && r.tenant == "tenant-a"
                && r.reason.as_deref() == Some(reason_a.as_str())
                && Some(&r.request_id) == request_id.as_ref()
        }),
    );
    for who in [&b_who, &b2_who] {
        for id in &s.all_ids {
            checks.that(
                format!(
                    "audit row for {}@{}'s decrypt attempt on {id}",
                    who.sub, who.owner
                ),
                audit_has(&audit, |r| {
                    r.action == "decrypt"
                        && r.secret_id.as_deref() == Some(id.as_str())
                        && r.tenant == who.owner
                        && r.user_id == who.sub
                        && r.reason.as_deref() == Some(reason.as_str())
                        && (r.outcome == "denied" || r.outcome == "failure")
                }),
            );
            for action in ["update", "delete"] {
                checks.that(
                    format!(
                        "audit row for {}@{}'s {action} attempt on {id}",
                        who.sub, who.owner
                    ),
                    audit_has(&audit, |r| {
                        r.action == action
                            && r.secret_id.as_deref() == Some(id.as_str())
                            && r.tenant == who.owner
                            && r.user_id == who.sub
                            && r.outcome != "success"
                    }),
                );
            }
        }
        checks.that(
            format!(
                "audit row for {}@{}'s vault read attempt",
                who.sub, who.owner
            ),
            audit_has(&audit, |r| {
                r.action == "decrypt"
                    && r.secret_id.is_none()
                    && r.tenant == who.owner
                    && r.user_id == who.sub
                    && r.reason.as_deref() == Some(reason.as_str())
                    && r.outcome == "denied"
            }),
        );
    }
    let misattributed: Vec<&AuditRow> = audit
        .iter()
        .filter(|r| {
            // The matrix's token minter (Cred::Token) minted A's token in tenant A.
            let setup = r.user_id == "token-minter" && r.action == "token_create";
            r.tenant == "tenant-a"
                && !setup
                && (r.user_id != "alice@a" || r.reason.as_deref() == Some(reason.as_str()))
        })
        .collect();
    checks.eq(
        "tenant B's attempts recorded under tenant A",
        misattributed,
        vec![],
    );
    eprintln!(
        "tenant isolation {backend:?}: {} checks passed",
        checks.passed()
    );
    checks.finish(&format!("tenant isolation ({backend:?}, {cred:?})"));
}

// Each backend runs each isolation suite once, JWTs on one and service tokens on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_sqlite_jwt() {
    tenant_isolation(Backend::Sqlite, Cred::Jwt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_isolation_postgres_token() {
    tenant_isolation(Backend::Postgres, Cred::Token).await;
}

async fn workspace_isolation(backend: Backend, cred: Cred) {
    let env = MatrixEnv::start(backend, cred).await;
    let a_who = Who::new("alice@a", "tenant-a", &ALL_ROLES, &[MEMBER_WS]);
    let a = env.api(&a_who).await;
    let s = seed_tenant_a(&a, &a_who.sub).await;
    // Two more workspace secrets for the write probes.
    let upd_value = format!("a-upd-{}", uniq());
    let upd = a
        .create_ok("w-upd", &upd_value, "workspace", Some(MEMBER_WS))
        .await;
    let del_value = format!("a-del-{}", uniq());
    let del = a
        .create_ok("w-del", &del_value, "workspace", Some(MEMBER_WS))
        .await;

    // Same tenant, every role but admin, not a member of W.
    let o_who = Who::new(
        "olga@a",
        "tenant-a",
        &["secrets.read", "secrets.decrypt", "secrets.write"],
        &["W-other"],
    );
    let o = env.api(&o_who).await;
    let mut checks = Checks::default();
    // The token works: its own workspace and the tenant's global secrets are reachable.
    let r = o
        .create("olga-own", "own", "workspace", Some("W-other"))
        .await;
    checks.status("outsider creates in its own workspace", &r, 201);
    let own_id = r.json()["id"].as_str().unwrap_or_default().to_owned();
    let r = o.get(&s.secrets[0].0).await;
    checks.status("outsider reads the tenant's global secret", &r, 200);

    let w_ids: BTreeSet<String> = s
        .all_ids
        .iter()
        .filter(|id| **id != s.secrets[0].0 && **id != s.secrets[2].0)
        .cloned()
        .chain([upd.clone(), del.clone()])
        .collect();
    let listed = o.listed_ids("").await;
    checks.eq(
        "outsider's list shows W's secrets",
        listed.intersection(&w_ids).count(),
        0,
    );
    let filtered = o
        .list_all(&format!("&scope_type=workspace&scope_id={MEMBER_WS}"))
        .await;
    checks.eq(
        "outsider's list filtered to W",
        filtered.map(|v| v.len()).ok(),
        Some(0),
    );

    let reason = format!("cross-workspace probe {}", uniq());
    let reach = Seeded {
        secrets: Vec::new(),
        vault_id: s.vault_id.clone(),
        vault_values: BTreeMap::new(),
        all_ids: w_ids
            .iter()
            .filter(|id| **id != upd && **id != del)
            .cloned()
            .collect(),
    };
    probe_all_missing(&mut checks, "outsider", &o, &reach, &reason).await;
    let r = o
        .create("injected", "x", "workspace", Some(MEMBER_WS))
        .await;
    checks.status("outsider creates in W", &r, 403);
    let r = o
        .vault_create(MEMBER_WS, "injected", &BTreeMap::from([("K", "v")]))
        .await;
    checks.status("outsider creates a vault in W", &r, 403);

    // Write probes on W's secrets.
    let r = o.update(&upd, "overwritten by an outsider").await;
    checks.status("outsider updates a W secret", &r, 404);
    let r = o.delete(&del).await;
    checks.status("outsider deletes a W secret", &r, 404);

    check_unchanged(
        &mut checks,
        "after the outsider's probes",
        &a,
        &Seeded {
            secrets: s
                .secrets
                .iter()
                .cloned()
                .chain([(upd.clone(), upd_value), (del.clone(), del_value)])
                .collect(),
            vault_id: s.vault_id.clone(),
            vault_values: s.vault_values.clone(),
            // A is an admin: it also lists the outsider's own secret.
            all_ids: s
                .all_ids
                .iter()
                .cloned()
                .chain([upd, del, own_id])
                .collect(),
        },
    )
    .await;

    let audit = env.srv.audit().await;
    for id in &reach.all_ids {
        checks.that(
            format!("'denied' audit row for the outsider's decrypt of {id}"),
            audit_has(&audit, |r| {
                r.action == "decrypt"
                    && r.outcome == "denied"
                    && r.secret_id.as_deref() == Some(id.as_str())
                    && r.tenant == "tenant-a"
                    && r.user_id == "olga@a"
                    && r.reason.as_deref() == Some(reason.as_str())
            }),
        );
    }
    checks.that(
        "'denied' audit row for the outsider's vault read",
        audit_has(&audit, |r| {
            r.action == "decrypt"
                && r.outcome == "denied"
                && r.secret_id.is_none()
                && r.user_id == "olga@a"
                && r.reason.as_deref() == Some(reason.as_str())
        }),
    );
    checks.that(
        "'denied' audit row for the outsider's create in W",
        audit_has(&audit, |r| {
            r.action == "create" && r.outcome == "denied" && r.user_id == "olga@a"
        }),
    );
    eprintln!(
        "workspace isolation {backend:?}: {} checks passed",
        checks.passed()
    );
    checks.finish(&format!("workspace isolation ({backend:?}, {cred:?})"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_isolation_sqlite_token() {
    workspace_isolation(Backend::Sqlite, Cred::Token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workspace_isolation_postgres_jwt() {
    workspace_isolation(Backend::Postgres, Cred::Jwt).await;
}

// =============================================================================================
// 5. Vault listing (SQLite and PostgreSQL)
// =============================================================================================

fn vault_ids(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// `GET /secrets/vaults`: two tenants with the same workspace and vault names (and the same
/// administrator `sub`), a narrow token (`secrets.read` in `W` only), pages of every size,
/// deleted vaults gone, 403 without `secrets.read`, 400 for bad parameters, nothing audited.
async fn vault_listing(backend: Backend, cred: Cred) {
    let env = MatrixEnv::start(backend, cred).await;
    let a_who = Who::new("vault-admin", "tenant-a", &ALL_ROLES, &[]);
    let b_who = Who::new("vault-admin", "tenant-b", &ALL_ROLES, &[MEMBER_WS]);
    let narrow_who = Who::new("narrow", "tenant-a", &["secrets.read"], &[MEMBER_WS]);
    let no_read_who = Who::new(
        "no-read",
        "tenant-a",
        &["secrets.decrypt", "secrets.write"],
        &[MEMBER_WS],
    );
    let (a, b) = (env.api(&a_who).await, env.api(&b_who).await);
    let (narrow, no_read) = (env.api(&narrow_who).await, env.api(&no_read_who).await);
    let mut checks = Checks::default();

    // Tenant A: five vaults in W, three in W2 (id -> workspace; ids sort as the API orders
    // them); tenant B: three with the same names in W.
    let key = BTreeMap::from([("K", "v")]);
    let mut a_vaults: BTreeMap<String, &str> = BTreeMap::new();
    let workspaces = [
        MEMBER_WS, OTHER_WS, MEMBER_WS, MEMBER_WS, OTHER_WS, MEMBER_WS, OTHER_WS, MEMBER_WS,
    ];
    for (i, ws) in workspaces.into_iter().enumerate() {
        let r = a.vault_create(ws, &format!("v{i}"), &key).await.expect(201);
        a_vaults.insert(r.json()["id"].as_str().unwrap().to_owned(), ws);
    }
    let mut b_vaults = Vec::new();
    for i in 0..3 {
        let r = b
            .vault_create(MEMBER_WS, &format!("v{i}"), &key)
            .await
            .expect(201);
        b_vaults.push(r.json()["id"].as_str().unwrap().to_owned());
    }
    b_vaults.sort();
    let in_ws = |ws: &str| -> Vec<String> {
        a_vaults
            .iter()
            .filter(|(_, w)| **w == ws)
            .map(|(id, _)| id.clone())
            .collect()
    };
    let all_a: Vec<String> = a_vaults.keys().cloned().collect();
    let audit_rows = env.srv.audit().await.len();

    // GET /secrets/vaults is the listing (the static route wins over /secrets/{id}): a page
    // of metadata, each item exactly id, name, workspace and created_at.
    let r = a.get_path("/secrets/vaults").await;
    checks.status("GET /secrets/vaults", &r, 200);
    let page = r.json();
    checks.eq(
        "GET /secrets/vaults: every vault of A in one page",
        vault_ids(page["items"].as_array().map_or(&[][..], |v| v)),
        all_a.clone(),
    );
    checks.eq(
        "GET /secrets/vaults: last page",
        page.get("next_cursor"),
        Some(&Value::Null),
    );
    let item = &page["items"][0];
    checks.eq(
        "a listed vault's fields",
        item.as_object()
            .map(|o| o.keys().cloned().collect::<Vec<_>>()),
        Some(vec![
            "created_at".into(),
            "id".into(),
            "name".into(),
            "workspace".into(),
        ]),
    );
    checks.that(
        format!("created_at is RFC 3339: {item}"),
        item["created_at"].as_str().is_some_and(|t| {
            time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).is_ok()
        }),
    );
    checks.eq(
        "the listed vault matches its metadata",
        a.vault_meta(item["id"].as_str().unwrap_or_default())
            .await
            .json()["name"]
            .clone(),
        item["name"].clone(),
    );

    // A's administrator: every vault of A in id order, at every page size; never B's.
    for limit in [1, 2, 3, 7, 8, 9, 1000] {
        let listed = a
            .vault_list_all("", limit)
            .await
            .map(|v| vault_ids(&v))
            .map_err(|r| r.ctx());
        checks.eq(format!("A, pages of {limit}"), listed, Ok(all_a.clone()));
    }
    let r = a.get_path("/secrets/vaults?limit=8").await;
    checks.eq(
        "a page holding exactly the last vault ends the listing",
        r.json()["next_cursor"].clone(),
        Value::Null,
    );
    let r = a.get_path("/secrets/vaults?limit=7").await;
    checks.eq(
        "a page with more after it names the next",
        r.json()["next_cursor"].as_str().map(str::to_owned),
        Some(all_a[6].clone()),
    );
    for (ws, expected) in [(MEMBER_WS, in_ws(MEMBER_WS)), (OTHER_WS, in_ws(OTHER_WS))] {
        let listed = a
            .vault_list_all(&format!("&workspace={ws}"), 2)
            .await
            .map(|v| vault_ids(&v))
            .map_err(|r| r.ctx());
        checks.eq(format!("A, ?workspace={ws}"), listed, Ok(expected));
    }
    let listed = a
        .vault_list_all("&workspace=W9", 2)
        .await
        .map(|v| v.len())
        .map_err(|r| r.ctx());
    checks.eq("A, ?workspace=W9 (no vaults)", listed, Ok(0));

    // Tenant B's administrator (same sub, same workspace and vault names): its own only.
    for limit in [1, 2, 1000] {
        let listed = b
            .vault_list_all("", limit)
            .await
            .map(|v| vault_ids(&v))
            .map_err(|r| r.ctx());
        checks.eq(format!("B, pages of {limit}"), listed, Ok(b_vaults.clone()));
    }

    // A narrow token: W's vaults only, filtered or not, paged or not.
    for limit in [1, 2, 1000] {
        let listed = narrow
            .vault_list_all("", limit)
            .await
            .map(|v| vault_ids(&v))
            .map_err(|r| r.ctx());
        checks.eq(
            format!("narrow, pages of {limit}"),
            listed,
            Ok(in_ws(MEMBER_WS)),
        );
        let listed = narrow
            .vault_list_all(&format!("&workspace={MEMBER_WS}"), limit)
            .await
            .map(|v| vault_ids(&v))
            .map_err(|r| r.ctx());
        checks.eq(
            format!("narrow, ?workspace={MEMBER_WS}, pages of {limit}"),
            listed,
            Ok(in_ws(MEMBER_WS)),
        );
    }
    let listed = narrow
        .vault_list_all(&format!("&workspace={OTHER_WS}"), 1000)
        .await
        .map(|v| v.len())
        .map_err(|r| r.ctx());
    checks.eq(
        format!("narrow, ?workspace={OTHER_WS} (not its own)"),
        listed,
        Ok(0),
    );

    // Without secrets.read: 403, like GET /secrets.
    let r = no_read.get_path("/secrets/vaults").await;
    checks.status("without secrets.read", &r, 403);
    checks.eq("without secrets.read: code", r.code(), "forbidden".into());

    // Bad parameters: 400 invalid_request, like GET /secrets.
    for query in [
        "limit=0",
        "limit=1001",
        "limit=-1",
        "limit=abc",
        "cursor=nope",
        "cursor=",
        "workspace=",
        "workspace=two%20words",
        "workspace=%00",
        "scope_id=W",
    ] {
        let r = a.get_path(&format!("/secrets/vaults?{query}")).await;
        checks.status(format!("?{query}"), &r, 400);
        checks.eq(
            format!("?{query}: code"),
            r.code(),
            "invalid_request".into(),
        );
    }

    // A deleted vault is gone from every listing.
    let gone = in_ws(MEMBER_WS)[1].clone();
    a.vault_delete(&gone).await.expect(204);
    let remaining: Vec<String> = all_a.iter().filter(|id| **id != gone).cloned().collect();
    let listed = a
        .vault_list_all("", 2)
        .await
        .map(|v| vault_ids(&v))
        .map_err(|r| r.ctx());
    checks.eq("A after a delete", listed, Ok(remaining));
    let listed = narrow
        .vault_list_all("", 1)
        .await
        .map(|v| vault_ids(&v))
        .map_err(|r| r.ctx());
    let expected: Vec<String> = in_ws(MEMBER_WS)
        .into_iter()
        .filter(|id| *id != gone)
        .collect();
    checks.eq("narrow after a delete", listed, Ok(expected));

    // Listing is not audited (the delete is: one row per key).
    checks.eq(
        "audit rows written by the listings",
        env.srv.audit().await.len() - audit_rows,
        1,
    );
    eprintln!(
        "vault listing {backend:?}: {} checks passed",
        checks.passed()
    );
    checks.finish(&format!("vault listing ({backend:?}, {cred:?})"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_listing_sqlite_token() {
    vault_listing(Backend::Sqlite, Cred::Token).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vault_listing_postgres_jwt() {
    vault_listing(Backend::Postgres, Cred::Jwt).await;
}
