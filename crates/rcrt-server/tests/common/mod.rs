//! What the server's test suites share: the backend a test runs on, a fresh KEK, and how a
//! server of this crate's binary is configured in a test's directory and database; [`http`]:
//! driving a running server over HTTP; [`outage`]: a KEK provider's peer paused under traffic.

// Used by some suites only: allowed here so that the suites that declare `mod common;` without
// `#[allow(dead_code)]` need nothing more.
#[allow(dead_code)]
pub mod http;
#[allow(dead_code)]
pub mod outage;

use std::path::PathBuf;

use rcrt_testkit::{ServerConfig, TempDir, TempPgDb};

const BIN: &str = env!("CARGO_BIN_EXE_rcrt-server");

/// A fresh random KEK as the server reads it (base64 of 32 bytes).
pub fn gen_kek() -> String {
    use base64::Engine;
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    b.extend_from_slice(uuid::Uuid::new_v4().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(b)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh PostgreSQL database for `Postgres`; none for `Sqlite` (its `rcrt.db` lives in the
    /// working directory). Panics (fails the test) when PostgreSQL is unreachable: a PostgreSQL
    /// test never silently skips.
    pub async fn database(self) -> Option<TempPgDb> {
        match self {
            Self::Sqlite => None,
            Self::Postgres => Some(TempPgDb::create().await),
        }
    }
}

/// The server binary in `dir`, on `pg` when given, with `extra` as its environment.
pub fn server_config(pg: Option<&TempPgDb>, dir: &TempDir, extra: &[(&str, &str)]) -> ServerConfig {
    let mut env: Vec<(String, String)> = Vec::new();
    if let Some(pg) = pg {
        env.push(("DB_URL".into(), pg.url().to_owned()));
    }
    env.extend(
        extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
    );
    ServerConfig {
        binary: PathBuf::from(BIN),
        env,
        workdir: dir.path().to_owned(),
    }
}
