//! Every environment variable the server reads is read here, once, into a checked [`Config`].
//! The README's configuration table documents the same list.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::auth::KeySource;
use rcrt_core::rewrap_job::RewrapSettings;
use rcrt_core::DEFAULT_MAX_VALUE_BYTES;
use rcrt_keys::{KekPlan, KekSources};
use zeroize::Zeroizing;

/// The default listen address (the guide's scripts call port 8081).
pub const DEFAULT_BIND: &str = "127.0.0.1:8081";
/// The default embedded database, in the working directory.
pub const DEFAULT_DB: &str = "rcrt.db";

/// How requests are authenticated: by JWTs, by service tokens, by both, or (neither) not at all.
#[derive(Debug)]
pub struct AuthMode {
    /// Bearer JWTs from one issuer for one audience, if accepted.
    pub jwt: Option<JwtSettings>,
    /// Service tokens (`rcrt_...`) accepted.
    pub tokens: bool,
}

impl AuthMode {
    /// No authentication: every request acts as `anonymous` in the `default` tenant.
    pub const DISABLED: Self = Self {
        jwt: None,
        tokens: false,
    };

    /// True when no credential is checked.
    pub fn is_disabled(&self) -> bool {
        self.jwt.is_none() && !self.tokens
    }
}

/// Where JWTs come from and how they are checked.
pub struct JwtSettings {
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Where the verification keys come from.
    pub keys: KeySource,
}

impl std::fmt::Debug for JwtSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "JwtSettings {{ issuer: {:?}, audience: {:?} }}",
            self.issuer, self.audience
        )
    }
}

/// Why the configuration was refused. Messages name variables, never their values.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A variable has a value that does not parse.
    #[error("{var}: {reason}")]
    Invalid {
        /// The variable.
        var: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// A KEK provider variable (`KEK_PROVIDER`, `KEK_REF`, a provider's own) is wrong; the
    /// message names the variable, never a credential.
    #[error("{0}")]
    Keys(String),
    /// `.env` exists but could not be read or parsed.
    #[error(
        ".env could not be parsed ({0}); the line's content is not shown because it may hold a key"
    )]
    DotEnv(String),
}

/// The server's configuration, checked.
pub struct Config {
    /// Where to listen.
    pub bind: SocketAddr,
    /// The store URL (`sqlite:PATH`, a path, or `postgres://...`).
    pub db_url: String,
    /// At most this many connections to PostgreSQL (`DB_POOL_SIZE`).
    pub db_pool_size: usize,
    /// Authentication mode.
    pub auth: AuthMode,
    /// Largest secret value in bytes.
    pub max_value_bytes: usize,
    /// KEK material, parsed later by `rcrt-keys` so its errors stay the guide's.
    pub kek: KekSources,
    /// Where the KEKs live (`KEK_PROVIDER`, `KEK_REF`, old and recovery KEKs, provider
    /// settings); see the README's KEK table.
    pub keks: KekPlan,
    /// The log filter (tracing `EnvFilter` syntax).
    pub log_filter: String,
    /// How log lines are written (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// How often the audit chain's heads are signed into a checkpoint
    /// (`AUDIT_CHECKPOINT_INTERVAL`, 1 s to 1 h).
    pub audit_checkpoint_interval: Duration,
    /// The background re-wrap.
    pub rewrap: RewrapSettings,
    /// Versions kept, the default recovery window, expired secrets, idempotency keys
    /// (`MAX_VERSIONS`, `DELETE_RECOVERY_WINDOW`, `EXPIRED_SECRETS`, `IDEMPOTENCY_TTL`).
    pub lifecycle: rcrt_core::lifecycle::LifecyclePolicy,
    /// How often the purge job looks for soft-deleted secrets past their window
    /// (`PURGE_INTERVAL`, 1 s to 1 h).
    pub purge_interval: Duration,
    /// A token that must exist as the bootstrap admin token (`BOOTSTRAP_ADMIN_TOKEN_FILE`).
    pub bootstrap_token_file: Option<PathBuf>,
    /// Where a server in token mode with an empty token table writes the admin token it
    /// creates (`BOOTSTRAP_TOKEN_OUTPUT_FILE`).
    pub bootstrap_token_output: PathBuf,
    /// Connection timeouts and limits, and the Host names served without authentication.
    pub http: HttpSettings,
    /// The certificate and key served over TLS, if the listener speaks TLS.
    pub tls: Option<TlsFiles>,
    /// The web console at `/ui` (`CONSOLE`, `CONSOLE_SESSION_TTL`).
    pub console: ConsoleSettings,
}

/// The web console's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConsoleSettings {
    /// Served at `/ui` (`CONSOLE=enabled`, the default) or not at all (`disabled`).
    pub enabled: bool,
    /// How long a console session lasts from sign-in (`CONSOLE_SESSION_TTL`, 1 min to 12 h).
    pub session_ttl: Duration,
}

/// The default `CONSOLE_SESSION_TTL`.
pub const DEFAULT_CONSOLE_SESSION_TTL: Duration = Duration::from_secs(3600);

impl Default for ConsoleSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            session_ttl: DEFAULT_CONSOLE_SESSION_TTL,
        }
    }
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines (`text`, the default).
    #[default]
    Text,
    /// One JSON object per line, for log collectors (`json`).
    Json,
}

/// The default `PURGE_INTERVAL`.
pub const DEFAULT_PURGE_INTERVAL: Duration = Duration::from_secs(60);

/// The default `AUDIT_CHECKPOINT_INTERVAL`.
pub const DEFAULT_AUDIT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(30);

/// Where the listener's certificate chain and private key are (`TLS_CERT_FILE`, `TLS_KEY_FILE`),
/// both PEM. Paths only: the files are read, and re-read when they change, by `tls`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The certificate, followed by its chain.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

/// What `rcrt-server healthcheck` needs: where the server listens and whether it speaks TLS.
/// Nothing else is read (no KEK, no store).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeConfig {
    /// The server's `BIND_ADDR`.
    pub bind: SocketAddr,
    /// True when `TLS_CERT_FILE` is set.
    pub tls: bool,
}

impl ProbeConfig {
    /// The variables [`ProbeConfig::from_lookup`] reads (see [`Lookup::process_only`]).
    pub const VARS: [&'static str; 2] = ["BIND_ADDR", "TLS_CERT_FILE"];

    /// Reads `BIND_ADDR` and `TLS_CERT_FILE` as the server does.
    pub fn from_lookup(l: &Lookup) -> Result<Self, ConfigError> {
        Ok(Self {
            bind: bind_addr(l)?,
            tls: l.get("TLS_CERT_FILE").is_some(),
        })
    }
}

fn bind_addr(l: &Lookup) -> Result<SocketAddr, ConfigError> {
    let text = l
        .get("BIND_ADDR")
        .map(|v| v.trim().to_owned())
        .unwrap_or_else(|| DEFAULT_BIND.to_owned());
    text.parse().map_err(|_| ConfigError::Invalid {
        var: "BIND_ADDR",
        reason: "must be host:port with an IP address, e.g. 127.0.0.1:8081".into(),
    })
}

/// `TLS_CERT_FILE` and `TLS_KEY_FILE`: both or neither.
fn tls_files(l: &Lookup) -> Result<Option<TlsFiles>, ConfigError> {
    let path = |k: &str| l.get(k).map(|v| PathBuf::from(v.trim()));
    match (path("TLS_CERT_FILE"), path("TLS_KEY_FILE")) {
        (Some(cert), Some(key)) => Ok(Some(TlsFiles { cert, key })),
        (None, None) => Ok(None),
        (cert, _) => Err(ConfigError::Invalid {
            var: if cert.is_some() {
                "TLS_KEY_FILE"
            } else {
                "TLS_CERT_FILE"
            },
            reason:
                "TLS_CERT_FILE and TLS_KEY_FILE must be set together (or neither, for plain HTTP)"
                    .into(),
        }),
    }
}

/// How connections are served: timeouts against slow and idle clients, a cap on open
/// connections, and the `Host` names a server without authentication answers.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Time to receive a request's head, counted from the connection's opening or the end of
    /// the previous response: also how long an idle keep-alive connection is kept
    /// (`HTTP_HEADER_TIMEOUT`).
    pub header_timeout: Duration,
    /// Time to receive a whole request body, from the request's head on (`HTTP_BODY_TIMEOUT`).
    pub body_timeout: Duration,
    /// A response write that makes no progress for this long (the client does not read)
    /// closes the connection (`HTTP_WRITE_TIMEOUT`).
    pub write_timeout: Duration,
    /// Connections served at once; past it the server stops accepting until one closes
    /// (`HTTP_MAX_CONNECTIONS`). Lowered at start to fit the open-file limit.
    pub max_connections: usize,
    /// Host names (no port) served besides the loopback ones when authentication is
    /// disabled (`ALLOWED_HOSTS`), lower case.
    pub allowed_hosts: Vec<String>,
}

impl Default for HttpSettings {
    fn default() -> Self {
        Self {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(30),
            max_connections: 10_000,
            allowed_hosts: Vec::new(),
        }
    }
}

impl Config {
    /// True when anyone who can reach a non-loopback port gets every secret: allowed because an
    /// operator said so, and warned about at start.
    pub fn exposed_without_auth(&self) -> bool {
        self.auth.is_disabled() && !self.bind.ip().is_loopback()
    }
}

type EnvFn = Box<dyn Fn(&str) -> Option<String>>;

/// Reads variables from the process environment first, then from `.env` in the working dir.
pub struct Lookup {
    dotenv: HashMap<String, Zeroizing<String>>,
    env: EnvFn,
}

impl Lookup {
    /// The process environment plus `./.env` if it exists.
    pub fn process() -> Result<Self, ConfigError> {
        Ok(Self {
            dotenv: read_dotenv(Path::new(".env"))?,
            env: Box::new(|k| std::env::var(k).ok()),
        })
    }

    /// The process environment plus only the `names` of `./.env`: the rest of the file (which
    /// may hold a KEK) is dropped, and wiped, as soon as it is parsed. For `healthcheck`, which
    /// needs no key.
    pub fn process_only(names: &[&str]) -> Result<Self, ConfigError> {
        let mut dotenv = read_dotenv(Path::new(".env"))?;
        dotenv.retain(|k, _| names.contains(&k.as_str()));
        Ok(Self {
            dotenv,
            env: Box::new(|k| std::env::var(k).ok()),
        })
    }

    /// A fixed map, for tests.
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Self {
            dotenv: HashMap::new(),
            env: Box::new(move |k| map.get(k).cloned()),
        }
    }

    fn get(&self, key: &str) -> Option<Zeroizing<String>> {
        (self.env)(key)
            .map(Zeroizing::new)
            .or_else(|| self.dotenv.get(key).cloned())
            .filter(|v| !v.is_empty())
    }
}

fn read_dotenv(path: &Path) -> Result<HashMap<String, Zeroizing<String>>, ConfigError> {
    if !path.exists() {
        return Ok(HashMap::new());
    }
    let file = std::fs::File::open(path).map_err(|e| ConfigError::DotEnv(e.to_string()))?;
    parse_dotenv(file)
}

/// The largest `.env` read.
const DOTENV_MAX_BYTES: u64 = 64 * 1024;
/// The most `$` (variable substitutions) a `.env` may hold. dotenvy expands `$VAR` and `${VAR}`
/// in values, and a value may name a variable defined just before it, so `a=$a$a` repeated
/// doubles a value per line: without a bound, a 1 KB file (found by fuzzing) makes gigabytes.
const DOTENV_MAX_SUBSTITUTIONS: usize = 16;

/// Parses `.env` content (quotes allowed). An error says where, never what: the line may hold a
/// key. Public for the fuzz target in `fuzz/`.
pub fn parse_dotenv(
    content: impl std::io::Read,
) -> Result<HashMap<String, Zeroizing<String>>, ConfigError> {
    use std::io::Read;
    let mut bytes = Zeroizing::new(Vec::new());
    content
        .take(DOTENV_MAX_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| ConfigError::DotEnv(e.to_string()))?;
    if bytes.len() as u64 > DOTENV_MAX_BYTES {
        return Err(ConfigError::DotEnv(format!(
            "larger than {DOTENV_MAX_BYTES} bytes"
        )));
    }
    if bytes.iter().filter(|b| **b == b'$').count() > DOTENV_MAX_SUBSTITUTIONS {
        return Err(ConfigError::DotEnv(format!(
            "more than {DOTENV_MAX_SUBSTITUTIONS} '$' (variable substitutions)"
        )));
    }
    let iter = dotenvy::from_read_iter(&bytes[..]);
    let mut map = HashMap::new();
    for item in iter {
        let (k, v) = item.map_err(|e| ConfigError::DotEnv(describe(&e)))?;
        map.insert(k, Zeroizing::new(v));
    }
    Ok(map)
}

/// dotenvy's own message quotes the offending line, which may hold a key: say only where.
fn describe(e: &dotenvy::Error) -> String {
    match e {
        dotenvy::Error::LineParse(_, index) => format!("syntax error at character {index}"),
        dotenvy::Error::Io(io) => io.to_string(),
        _ => "invalid entry".to_owned(),
    }
}

impl Config {
    /// Builds the configuration from a lookup.
    pub fn from_lookup(l: &Lookup) -> Result<Self, ConfigError> {
        let plain = |k: &str| l.get(k).map(|v| v.trim().to_owned());
        let bind = bind_addr(l)?;
        let tls = tls_files(l)?;
        let jwt_settings = || -> Result<JwtSettings, ConfigError> {
            let required = |var: &'static str| {
                plain(var).ok_or(ConfigError::Invalid {
                    var,
                    reason: "is required when AUTH_MODE includes jwt".into(),
                })
            };
            let sources = [
                plain("JWT_JWKS_URL")
                    .map(|u| check_jwks_url(&u).map(|()| KeySource::JwksUrl(u)))
                    .transpose()?,
                plain("JWT_PUBLIC_KEY_FILE").map(|p| KeySource::PublicKeyFile(p.into())),
                plain("JWT_HS256_SECRET_FILE").map(|p| KeySource::Hs256SecretFile(p.into())),
            ];
            let mut given = sources.into_iter().flatten();
            let keys = match (given.next(), given.next()) {
                (Some(k), None) => k,
                _ => {
                    return Err(ConfigError::Invalid {
                        var: "AUTH_MODE",
                        reason: "jwt needs exactly one of JWT_JWKS_URL, JWT_PUBLIC_KEY_FILE, JWT_HS256_SECRET_FILE".into(),
                    })
                }
            };
            Ok(JwtSettings {
                issuer: required("JWT_ISSUER")?,
                audience: required("JWT_AUDIENCE")?,
                keys,
            })
        };
        let auth = match plain("AUTH_MODE").as_deref() {
            // Unset: the guide's development flow on loopback; tokens anywhere else.
            None if bind.ip().is_loopback() => AuthMode::DISABLED,
            None => AuthMode {
                jwt: None,
                tokens: true,
            },
            Some(text) => {
                let mut mode = AuthMode::DISABLED;
                let mut disabled = false;
                for part in text.split(',').map(str::trim) {
                    match part {
                        "disabled" => disabled = true,
                        "jwt" if mode.jwt.is_none() => mode.jwt = Some(jwt_settings()?),
                        "token" => mode.tokens = true,
                        _ => {
                            return Err(ConfigError::Invalid {
                                var: "AUTH_MODE",
                                reason: "supported values: disabled, jwt, token, jwt,token".into(),
                            })
                        }
                    }
                }
                if disabled && !mode.is_disabled() {
                    return Err(ConfigError::Invalid {
                        var: "AUTH_MODE",
                        reason: "disabled cannot be combined with jwt or token".into(),
                    });
                }
                mode
            }
        };
        let db_url = match (plain("DB_URL"), plain("DATABASE_URL")) {
            (Some(a), Some(b)) if a != b => {
                return Err(ConfigError::Invalid {
                    var: "DB_URL",
                    reason: "DB_URL and DATABASE_URL are both set and differ; set one".into(),
                })
            }
            (Some(_), _) | (None, Some(_)) if plain("DB_URL_FILE").is_some() => {
                return Err(ConfigError::Invalid {
                    var: "DB_URL_FILE",
                    reason: "DB_URL_FILE and DB_URL (or DATABASE_URL) are both set; set one".into(),
                })
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => match plain("DB_URL_FILE") {
                Some(path) => db_url_from_file(Path::new(&path))?,
                None => DEFAULT_DB.to_owned(),
            },
        };
        let db_pool_size = match plain("DB_POOL_SIZE") {
            None => rcrt_store::DEFAULT_POOL_SIZE,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (2..=1024).contains(n))
                .ok_or(ConfigError::Invalid {
                    var: "DB_POOL_SIZE",
                    reason: "must be a whole number of connections from 2 to 1024".into(),
                })?,
        };
        let max_value_bytes = match plain("MAX_VALUE_BYTES") {
            None => DEFAULT_MAX_VALUE_BYTES,
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=16 * 1024 * 1024).contains(n))
                .ok_or(ConfigError::Invalid {
                    var: "MAX_VALUE_BYTES",
                    reason: "must be a whole number of bytes from 1 to 16777216".into(),
                })?,
        };
        let number = |var: &'static str, default: u32, min: u32| -> Result<u32, ConfigError> {
            match plain(var) {
                None => Ok(default),
                Some(v) => {
                    v.parse::<u32>()
                        .ok()
                        .filter(|n| *n >= min)
                        .ok_or(ConfigError::Invalid {
                            var,
                            reason: format!("must be a whole number of at least {min}"),
                        })
                }
            }
        };
        let defaults = RewrapSettings::default();
        let rewrap = RewrapSettings {
            batch_size: number("REWRAP_BATCH_SIZE", defaults.batch_size, 1)?,
            max_rows_per_sec: number("REWRAP_MAX_ROWS_PER_SEC", defaults.max_rows_per_sec, 0)?,
            auto_start: match plain("REWRAP_AUTO").as_deref() {
                None | Some("true") | Some("1") => true,
                Some("false") | Some("0") => false,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        var: "REWRAP_AUTO",
                        reason: "must be true or false".into(),
                    })
                }
            },
            ..defaults
        };
        let bootstrap_token_file = plain("BOOTSTRAP_ADMIN_TOKEN_FILE").map(PathBuf::from);
        if bootstrap_token_file.is_some() && !auth.tokens {
            return Err(ConfigError::Invalid {
                var: "BOOTSTRAP_ADMIN_TOKEN_FILE",
                reason:
                    "needs AUTH_MODE=token or jwt,token (this server would not accept the token)"
                        .into(),
            });
        }
        let bootstrap_token_output = plain("BOOTSTRAP_TOKEN_OUTPUT_FILE")
            .map(PathBuf::from)
            .unwrap_or_else(|| default_bootstrap_output(&db_url));
        let duration = |var: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match plain(var) {
                None => Ok(default),
                Some(v) => humantime::parse_duration(&v)
                    .ok()
                    .filter(|d| *d >= Duration::from_millis(100) && *d <= Duration::from_secs(3600))
                    .ok_or(ConfigError::Invalid {
                        var,
                        reason: "must be a duration from 100ms to 1h, e.g. 10s or 500ms".into(),
                    }),
            }
        };
        let log_format = match plain("LOG_FORMAT")
            .map(|v| v.to_ascii_lowercase())
            .as_deref()
        {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(_) => {
                return Err(ConfigError::Invalid {
                    var: "LOG_FORMAT",
                    reason: "must be text or json".into(),
                })
            }
        };
        // Not the HTTP bounds: a checkpoint every 100 ms would be a row per tick, and one
        // more than an hour apart leaves too long a tail protected only by the chain.
        let audit_checkpoint_interval = match plain("AUDIT_CHECKPOINT_INTERVAL") {
            None => DEFAULT_AUDIT_CHECKPOINT_INTERVAL,
            Some(v) => humantime::parse_duration(&v)
                .ok()
                .filter(|d| *d >= Duration::from_secs(1) && *d <= Duration::from_secs(3600))
                .ok_or(ConfigError::Invalid {
                    var: "AUDIT_CHECKPOINT_INTERVAL",
                    reason: "must be a duration from 1s to 1h, e.g. 30s or 5m".into(),
                })?,
        };
        let bounded = |var: &'static str,
                       default: Duration,
                       (min, max): (Duration, Duration),
                       hint: &str|
         -> Result<Duration, ConfigError> {
            match plain(var) {
                None => Ok(default),
                Some(v) => humantime::parse_duration(&v)
                    .ok()
                    .filter(|d| *d >= min && *d <= max)
                    .ok_or(ConfigError::Invalid {
                        var,
                        reason: hint.to_owned(),
                    }),
            }
        };
        let lifecycle_defaults = rcrt_core::lifecycle::LifecyclePolicy::default();
        let lifecycle = rcrt_core::lifecycle::LifecyclePolicy {
            max_versions: match plain("MAX_VERSIONS") {
                None => lifecycle_defaults.max_versions,
                Some(v) => v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=rcrt_core::lifecycle::MAX_KEPT_VERSIONS).contains(n))
                    .ok_or(ConfigError::Invalid {
                        var: "MAX_VERSIONS",
                        reason: "must be a whole number from 1 to 100".into(),
                    })?,
            },
            recovery_window: bounded(
                "DELETE_RECOVERY_WINDOW",
                lifecycle_defaults.recovery_window,
                (Duration::ZERO, rcrt_core::lifecycle::MAX_RECOVERY_WINDOW),
                "must be a duration from 0s (delete at once) to 90d, e.g. 7d",
            )?,
            expired: match plain("EXPIRED_SECRETS").as_deref() {
                None | Some("deny") => rcrt_core::lifecycle::ExpiredSecrets::Deny,
                Some("allow") => rcrt_core::lifecycle::ExpiredSecrets::Allow,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        var: "EXPIRED_SECRETS",
                        reason: "must be deny or allow".into(),
                    })
                }
            },
            idempotency_ttl: bounded(
                "IDEMPOTENCY_TTL",
                lifecycle_defaults.idempotency_ttl,
                (Duration::from_secs(60), Duration::from_secs(7 * 24 * 3600)),
                "must be a duration from 1m to 7d, e.g. 24h",
            )?,
        };
        let purge_interval = bounded(
            "PURGE_INTERVAL",
            DEFAULT_PURGE_INTERVAL,
            (Duration::from_secs(1), Duration::from_secs(3600)),
            "must be a duration from 1s to 1h, e.g. 60s",
        )?;
        let console = ConsoleSettings {
            enabled: match plain("CONSOLE").as_deref() {
                None | Some("enabled") => true,
                Some("disabled") => false,
                Some(_) => {
                    return Err(ConfigError::Invalid {
                        var: "CONSOLE",
                        reason: "must be enabled or disabled".into(),
                    })
                }
            },
            session_ttl: bounded(
                "CONSOLE_SESSION_TTL",
                DEFAULT_CONSOLE_SESSION_TTL,
                (Duration::from_secs(60), Duration::from_secs(12 * 3600)),
                "must be a duration from 1m to 12h, e.g. 1h",
            )?,
        };
        let http_defaults = HttpSettings::default();
        let http = HttpSettings {
            header_timeout: duration("HTTP_HEADER_TIMEOUT", http_defaults.header_timeout)?,
            body_timeout: duration("HTTP_BODY_TIMEOUT", http_defaults.body_timeout)?,
            write_timeout: duration("HTTP_WRITE_TIMEOUT", http_defaults.write_timeout)?,
            max_connections: number(
                "HTTP_MAX_CONNECTIONS",
                u32::try_from(http_defaults.max_connections).unwrap_or(u32::MAX),
                1,
            )? as usize,
            allowed_hosts: match plain("ALLOWED_HOSTS") {
                None => Vec::new(),
                Some(list) => list
                    .split(',')
                    .map(|h| h.trim().to_ascii_lowercase())
                    .filter(|h| !h.is_empty())
                    .map(|h| {
                        let name = h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b));
                        let ipv6 = h
                            .strip_prefix('[')
                            .and_then(|i| i.strip_suffix(']'))
                            .is_some_and(|i| i.parse::<std::net::Ipv6Addr>().is_ok());
                        if name || ipv6 {
                            Ok(h)
                        } else {
                            Err(ConfigError::Invalid {
                                var: "ALLOWED_HOSTS",
                                reason: "must be host names, IPv4 addresses or [IPv6] addresses without ports, separated by commas".into(),
                            })
                        }
                    })
                    .collect::<Result<_, _>>()?,
            },
        };
        Ok(Self {
            http,
            tls,
            rewrap,
            bootstrap_token_file,
            bootstrap_token_output,
            bind,
            db_url,
            auth,
            max_value_bytes,
            db_pool_size,
            kek: KekSources::from_lookup(|k| l.get(k)),
            keks: KekPlan::from_lookup(&|k| l.get(k))
                .map_err(|e| ConfigError::Keys(e.to_string()))?,
            log_filter: plain("RUST_LOG").unwrap_or_else(|| "info".to_owned()),
            log_format,
            audit_checkpoint_interval,
            lifecycle,
            purge_interval,
            console,
        })
    }
}

/// A JWKS URL must be https, except to a loopback host (a sidecar or a test): over plain http
/// anyone on the path could hand the server keys of their own.
fn check_jwks_url(url: &str) -> Result<(), ConfigError> {
    let invalid = |reason: &str| ConfigError::Invalid {
        var: "JWT_JWKS_URL",
        reason: reason.into(),
    };
    let parsed = reqwest::Url::parse(url).map_err(|_| invalid("is not a URL"))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(invalid(
            "must be an https URL (plain http only to a loopback host)",
        )),
    }
}

/// `bootstrap-token` next to the SQLite database; in the working directory for PostgreSQL.
fn default_bootstrap_output(db_url: &str) -> PathBuf {
    const NAME: &str = "bootstrap-token";
    if db_url.starts_with("postgres://") || db_url.starts_with("postgresql://") {
        return PathBuf::from(NAME);
    }
    let path = db_url
        .strip_prefix("sqlite://")
        .or_else(|| db_url.strip_prefix("sqlite:"))
        .unwrap_or(db_url);
    Path::new(path)
        .parent()
        .map_or_else(|| PathBuf::from(NAME), |dir| dir.join(NAME))
}

/// Reads `DB_URL_FILE`: the URL (which may carry a password) from a file such as a Compose or
/// Kubernetes secret, so it need not sit in the environment. Surrounding whitespace is dropped.
fn db_url_from_file(path: &Path) -> Result<String, ConfigError> {
    let invalid = |reason: String| ConfigError::Invalid {
        var: "DB_URL_FILE",
        reason,
    };
    // The text is not echoed in any error: it may hold a password.
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
    let url = text.trim();
    if url.is_empty() {
        return Err(invalid(format!("{} is empty", path.display())));
    }
    if url.contains(['\n', '\r']) {
        return Err(invalid(format!(
            "{} holds more than one line; it must hold only the URL",
            path.display()
        )));
    }
    Ok(url.to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn defaults() {
        let c = Config::from_lookup(&Lookup::from_pairs(&[])).unwrap();
        assert_eq!(c.bind.to_string(), DEFAULT_BIND);
        assert_eq!(c.db_url, "rcrt.db");
        assert!(c.auth.is_disabled());
        assert_eq!(c.max_value_bytes, 65536);
        assert_eq!(c.bootstrap_token_output, PathBuf::from("bootstrap-token"));
        assert!(c.bootstrap_token_file.is_none());
    }

    #[test]
    fn db_url_file_reads_the_url_and_names_the_file_on_errors() {
        let dir = std::env::temp_dir().join(format!("rcrt-dburl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("db_url");
        std::fs::write(&file, "postgres://rcrt:pw@db/rcrt\n").unwrap();
        let path = file.to_str().unwrap();
        let c = Config::from_lookup(&Lookup::from_pairs(&[("DB_URL_FILE", path)])).unwrap();
        assert_eq!(c.db_url, "postgres://rcrt:pw@db/rcrt");
        let err = |pairs: &[(&str, &str)]| {
            Config::from_lookup(&Lookup::from_pairs(pairs))
                .err()
                .unwrap()
                .to_string()
        };
        let both = err(&[("DB_URL_FILE", path), ("DB_URL", "x.db")]);
        assert!(
            both.contains("DB_URL_FILE") && both.contains("both set"),
            "{both}"
        );
        std::fs::write(&file, " \n").unwrap();
        let empty = err(&[("DB_URL_FILE", path)]);
        assert!(
            empty.contains("DB_URL_FILE") && empty.contains("is empty"),
            "{empty}"
        );
        std::fs::write(&file, "postgres://a:secretpw@h/d\nmore").unwrap();
        let two = err(&[("DB_URL_FILE", path)]);
        assert!(
            two.contains("more than one line") && !two.contains("secretpw"),
            "{two}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let missing = err(&[("DB_URL_FILE", path)]);
        assert!(
            missing.contains("cannot read") && missing.contains(path),
            "{missing}"
        );
    }

    #[test]
    fn bootstrap_output_sits_beside_the_sqlite_file() {
        let out = |db: &str| {
            Config::from_lookup(&Lookup::from_pairs(&[("DB_URL", db)]))
                .unwrap()
                .bootstrap_token_output
        };
        assert_eq!(out("/data/rcrt.db"), PathBuf::from("/data/bootstrap-token"));
        assert_eq!(out("sqlite:/d/x.db"), PathBuf::from("/d/bootstrap-token"));
        assert_eq!(out("postgres://u@h/db"), PathBuf::from("bootstrap-token"));
        let c = Config::from_lookup(&Lookup::from_pairs(&[(
            "BOOTSTRAP_TOKEN_OUTPUT_FILE",
            "/run/t",
        )]))
        .unwrap();
        assert_eq!(c.bootstrap_token_output, PathBuf::from("/run/t"));
    }

    #[test]
    fn auth_modes() {
        let cfg = |pairs: &[(&str, &str)]| Config::from_lookup(&Lookup::from_pairs(pairs));
        // Unset: disabled on loopback, tokens on any other address.
        for addr in ["0.0.0.0:8081", "[::]:8081", "10.1.2.3:8081"] {
            let c = cfg(&[("BIND_ADDR", addr)]).unwrap();
            assert!(c.auth.tokens && c.auth.jwt.is_none(), "{addr}");
            assert!(!c.exposed_without_auth());
        }
        for addr in ["127.0.0.1:8081", "[::1]:8081"] {
            assert!(
                cfg(&[("BIND_ADDR", addr)]).unwrap().auth.is_disabled(),
                "{addr}"
            );
        }
        // Disabled off loopback starts, flagged for the start-up warning.
        let c = cfg(&[("BIND_ADDR", "0.0.0.0:8081"), ("AUTH_MODE", "disabled")]).unwrap();
        assert!(c.auth.is_disabled() && c.exposed_without_auth());
        let c = cfg(&[("AUTH_MODE", "token")]).unwrap();
        assert!(c.auth.tokens && c.auth.jwt.is_none());
        let jwt_env = [
            ("JWT_ISSUER", "https://idp"),
            ("JWT_AUDIENCE", "rcrt"),
            ("JWT_JWKS_URL", "http://127.0.0.1:1/jwks"),
        ];
        for both in ["jwt,token", "token,jwt", " jwt , token "] {
            let mut pairs = vec![("AUTH_MODE", both)];
            pairs.extend_from_slice(&jwt_env);
            let c = cfg(&pairs).unwrap();
            assert!(c.auth.tokens && c.auth.jwt.is_some(), "{both}");
        }
        // A bootstrap token on a server that accepts no token is a mistake.
        assert!(cfg(&[("BOOTSTRAP_ADMIN_TOKEN_FILE", "/t")]).is_err());
        let mut pairs = vec![("AUTH_MODE", "jwt"), ("BOOTSTRAP_ADMIN_TOKEN_FILE", "/t")];
        pairs.extend_from_slice(&jwt_env);
        assert!(cfg(&pairs).is_err());
        let c = cfg(&[("AUTH_MODE", "token"), ("BOOTSTRAP_ADMIN_TOKEN_FILE", "/t")]).unwrap();
        assert_eq!(c.bootstrap_token_file, Some(PathBuf::from("/t")));
        // jwt,token still needs the JWT settings.
        assert!(cfg(&[("AUTH_MODE", "jwt,token")]).is_err());
        for bad in ["magic", "disabled,token", "jwt;token", "", "token,"] {
            let mut pairs = vec![("AUTH_MODE", bad)];
            pairs.extend_from_slice(&jwt_env);
            // An empty value counts as unset (loopback: disabled).
            if bad.is_empty() {
                assert!(cfg(&pairs).unwrap().auth.is_disabled());
            } else {
                assert!(cfg(&pairs).is_err(), "{bad}");
            }
        }
        // jwt needs an issuer, an audience and exactly one key source.
        assert!(Config::from_lookup(&Lookup::from_pairs(&[("AUTH_MODE", "jwt")])).is_err());
        let jwt = |extra: &[(&'static str, &'static str)]| {
            let mut pairs = vec![
                ("AUTH_MODE", "jwt"),
                ("JWT_ISSUER", "https://idp"),
                ("JWT_AUDIENCE", "rcrt"),
            ];
            pairs.extend_from_slice(extra);
            Config::from_lookup(&Lookup::from_pairs(&pairs))
        };
        assert!(jwt(&[]).is_err());
        assert!(jwt(&[("JWT_JWKS_URL", "http://127.0.0.1:1/jwks")]).is_ok());
        // JWKS over https, or plain http to a loopback host only.
        for ok in [
            "https://idp.example/.well-known/jwks.json",
            "http://localhost:8080/jwks",
            "http://[::1]:1/jwks",
        ] {
            assert!(jwt(&[("JWT_JWKS_URL", ok)]).is_ok(), "{ok}");
        }
        for bad in [
            "http://idp.example/jwks",
            "http://10.0.0.1/jwks",
            "ftp://127.0.0.1/jwks",
            "not a url",
        ] {
            assert!(jwt(&[("JWT_JWKS_URL", bad)]).is_err(), "{bad}");
        }
        assert!(jwt(&[
            ("JWT_JWKS_URL", "http://127.0.0.1:1/jwks"),
            ("JWT_PUBLIC_KEY_FILE", "/k.pem")
        ])
        .is_err());
    }

    #[test]
    fn http_settings() {
        let cfg = |pairs: &[(&str, &str)]| Config::from_lookup(&Lookup::from_pairs(pairs));
        let d = cfg(&[]).unwrap().http;
        assert_eq!(d.header_timeout, Duration::from_secs(10));
        assert_eq!(d.body_timeout, Duration::from_secs(30));
        assert_eq!(d.write_timeout, Duration::from_secs(30));
        assert_eq!(d.max_connections, 10_000);
        assert!(d.allowed_hosts.is_empty());
        let c = cfg(&[
            ("HTTP_HEADER_TIMEOUT", "500ms"),
            ("HTTP_BODY_TIMEOUT", "1m"),
            ("HTTP_WRITE_TIMEOUT", "2s"),
            ("HTTP_MAX_CONNECTIONS", "50"),
            (
                "ALLOWED_HOSTS",
                " RCRT.internal , secrets.example.com,[fd00::1],",
            ),
        ])
        .unwrap()
        .http;
        assert_eq!(c.header_timeout, Duration::from_millis(500));
        assert_eq!(c.body_timeout, Duration::from_secs(60));
        assert_eq!(c.write_timeout, Duration::from_secs(2));
        assert_eq!(c.max_connections, 50);
        assert_eq!(
            c.allowed_hosts,
            ["rcrt.internal", "secrets.example.com", "[fd00::1]"]
        );
        for (var, bad) in [
            ("HTTP_HEADER_TIMEOUT", "0s"),
            ("HTTP_HEADER_TIMEOUT", "10"),
            ("HTTP_BODY_TIMEOUT", "2h"),
            ("HTTP_WRITE_TIMEOUT", "soon"),
            ("HTTP_MAX_CONNECTIONS", "0"),
            ("ALLOWED_HOSTS", "evil.example:8081/x"),
            ("ALLOWED_HOSTS", "a b"),
            ("ALLOWED_HOSTS", "rcrt.internal:8081"),
        ] {
            let err = cfg(&[(var, bad)]).err().unwrap().to_string();
            assert!(err.starts_with(var), "{var}={bad}: {err}");
        }
    }

    #[test]
    fn lifecycle_settings() {
        let cfg = |pairs: &[(&str, &str)]| Config::from_lookup(&Lookup::from_pairs(pairs));
        let d = cfg(&[]).unwrap();
        assert_eq!(d.lifecycle.max_versions, 10);
        assert_eq!(d.lifecycle.recovery_window, Duration::ZERO);
        assert_eq!(d.purge_interval, Duration::from_secs(60));
        let c = cfg(&[
            ("MAX_VERSIONS", "3"),
            ("DELETE_RECOVERY_WINDOW", "7d"),
            ("EXPIRED_SECRETS", "allow"),
            ("IDEMPOTENCY_TTL", "1h"),
            ("PURGE_INTERVAL", "5s"),
        ])
        .unwrap();
        assert_eq!(c.lifecycle.max_versions, 3);
        assert_eq!(c.lifecycle.recovery_window, Duration::from_secs(7 * 86400));
        assert_eq!(
            c.lifecycle.expired,
            rcrt_core::lifecycle::ExpiredSecrets::Allow
        );
        assert_eq!(c.lifecycle.idempotency_ttl, Duration::from_secs(3600));
        assert_eq!(c.purge_interval, Duration::from_secs(5));
        for (var, bad) in [
            ("MAX_VERSIONS", "0"),
            ("MAX_VERSIONS", "101"),
            ("DELETE_RECOVERY_WINDOW", "91d"),
            ("EXPIRED_SECRETS", "yes"),
            ("IDEMPOTENCY_TTL", "1s"),
            ("PURGE_INTERVAL", "2h"),
        ] {
            let e = cfg(&[(var, bad)]).err().unwrap().to_string();
            assert!(e.contains(var), "{var}={bad}: {e}");
        }
    }

    #[test]
    fn console_settings() {
        let cfg = |pairs: &[(&str, &str)]| Config::from_lookup(&Lookup::from_pairs(pairs));
        assert_eq!(cfg(&[]).unwrap().console, ConsoleSettings::default());
        assert!(cfg(&[]).unwrap().console.enabled);
        let c = cfg(&[("CONSOLE", "disabled"), ("CONSOLE_SESSION_TTL", "15m")]).unwrap();
        assert!(!c.console.enabled);
        assert_eq!(c.console.session_ttl, Duration::from_secs(900));
        for (var, bad) in [
            ("CONSOLE", "off"),
            ("CONSOLE_SESSION_TTL", "30s"),
            ("CONSOLE_SESSION_TTL", "13h"),
        ] {
            let e = cfg(&[(var, bad)]).err().unwrap().to_string();
            assert!(e.contains(var), "{var}={bad}: {e}");
        }
    }

    #[test]
    fn log_format_and_checkpoint_interval() {
        let cfg = |pairs: &[(&str, &str)]| Config::from_lookup(&Lookup::from_pairs(pairs));
        let d = cfg(&[]).unwrap();
        assert_eq!(d.log_format, LogFormat::Text);
        assert_eq!(d.audit_checkpoint_interval, Duration::from_secs(30));
        assert_eq!(
            cfg(&[("LOG_FORMAT", "json")]).unwrap().log_format,
            LogFormat::Json
        );
        assert_eq!(
            cfg(&[("LOG_FORMAT", " JSON ")]).unwrap().log_format,
            LogFormat::Json
        );
        assert_eq!(
            cfg(&[("LOG_FORMAT", "text")]).unwrap().log_format,
            LogFormat::Text
        );
        for (v, want) in [("1s", 1), ("5m", 300), ("1h", 3600), ("90s", 90)] {
            let c = cfg(&[("AUDIT_CHECKPOINT_INTERVAL", v)]).unwrap();
            assert_eq!(
                c.audit_checkpoint_interval,
                Duration::from_secs(want),
                "{v}"
            );
        }
        for (var, bad) in [
            ("LOG_FORMAT", "yaml"),
            ("LOG_FORMAT", "json,text"),
            ("AUDIT_CHECKPOINT_INTERVAL", "500ms"),
            ("AUDIT_CHECKPOINT_INTERVAL", "0s"),
            ("AUDIT_CHECKPOINT_INTERVAL", "61m"),
            ("AUDIT_CHECKPOINT_INTERVAL", "30"),
            ("AUDIT_CHECKPOINT_INTERVAL", "often"),
        ] {
            let err = cfg(&[(var, bad)]).err().unwrap().to_string();
            assert!(err.starts_with(var), "{var}={bad}: {err}");
        }
    }

    #[test]
    fn tls_files_both_or_neither() {
        let cfg = |pairs: &[(&str, &str)]| Config::from_lookup(&Lookup::from_pairs(pairs));
        assert_eq!(cfg(&[]).unwrap().tls, None);
        let c = cfg(&[("TLS_CERT_FILE", "/c.pem"), ("TLS_KEY_FILE", " /k.pem ")]).unwrap();
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            })
        );
        for one in ["TLS_CERT_FILE", "TLS_KEY_FILE"] {
            let err = cfg(&[(one, "/x.pem")]).err().unwrap().to_string();
            assert!(
                err.contains("TLS_CERT_FILE") && err.contains("TLS_KEY_FILE"),
                "{err}"
            );
        }
        let probe = |pairs: &[(&str, &str)]| ProbeConfig::from_lookup(&Lookup::from_pairs(pairs));
        assert_eq!(
            probe(&[]).unwrap(),
            ProbeConfig {
                bind: DEFAULT_BIND.parse().unwrap(),
                tls: false
            }
        );
        let p = probe(&[("BIND_ADDR", "0.0.0.0:9"), ("TLS_CERT_FILE", "/c.pem")]).unwrap();
        assert_eq!((p.bind.port(), p.tls), (9, true));
        assert!(probe(&[("BIND_ADDR", "localhost:9")]).is_err());
    }

    #[test]
    fn database_pool_size() {
        let size = |v: &str| {
            Config::from_lookup(&Lookup::from_pairs(&[("DB_POOL_SIZE", v)])).map(|c| c.db_pool_size)
        };
        let default = Config::from_lookup(&Lookup::from_pairs(&[])).unwrap();
        assert_eq!(default.db_pool_size, rcrt_store::DEFAULT_POOL_SIZE);
        assert_eq!(size("2").unwrap(), 2);
        assert_eq!(size("64").unwrap(), 64);
        for bad in ["0", "1", "1025", "eight", "-4"] {
            let err = size(bad).unwrap_err().to_string();
            assert!(err.contains("DB_POOL_SIZE"), "{bad:?}: {err}");
        }
    }

    #[test]
    fn database_url_alias() {
        let c = Config::from_lookup(&Lookup::from_pairs(&[("DATABASE_URL", "postgres://x/y")]))
            .unwrap();
        assert_eq!(c.db_url, "postgres://x/y");
        assert!(Config::from_lookup(&Lookup::from_pairs(&[
            ("DATABASE_URL", "postgres://x/y"),
            ("DB_URL", "postgres://x/z")
        ]))
        .is_err());
        assert!(Config::from_lookup(&Lookup::from_pairs(&[("MAX_VALUE_BYTES", "0")])).is_err());
    }

    /// Found by the `dotenv` fuzz target: each `a=$a$a` line doubles `a`, so 40 lines would
    /// expand to terabytes and the server died out of memory before it could say why.
    #[test]
    fn dotenv_substitution_bombs_are_refused() {
        let mut bomb = String::from("a=xxxxxxxxxxxxxxxx\n");
        for _ in 0..40 {
            bomb.push_str("a=$a$a\n");
        }
        let err = parse_dotenv(bomb.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("substitutions"), "{err}");
        assert!(!err.contains("xxxx"), "{err}");
        // A few substitutions stay allowed, and the size is bounded too.
        let ok = parse_dotenv(&b"A=1\nB=${A}2\nC=$B$A\n"[..]).unwrap();
        assert_eq!(ok.get("C").map(|v| v.as_str()), Some("121"));
        let big = "A=".to_owned() + &"x".repeat(70 * 1024);
        assert!(parse_dotenv(big.as_bytes()).is_err());
    }

    #[test]
    fn dotenv_with_quotes_and_env_precedence() {
        let dir = std::env::temp_dir().join(format!("rcrt-cfg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(".env");
        std::fs::write(
            &p,
            "LOCAL_KEK_BASE64=\"xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=\"\nBIND_ADDR=127.0.0.1:9999\n",
        )
        .unwrap();
        let l = Lookup {
            dotenv: read_dotenv(&p).unwrap(),
            env: Box::new(|k| (k == "BIND_ADDR").then(|| "127.0.0.1:7777".to_owned())),
        };
        let c = Config::from_lookup(&l).unwrap();
        assert_eq!(c.bind.port(), 7777);
        assert_eq!(
            c.kek.current.as_deref().map(String::as_str),
            Some("xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=")
        );
        std::fs::write(&p, "LOCAL_KEK_BASE64=\"unterminated\nX\n").unwrap();
        let err = read_dotenv(&p).unwrap_err().to_string();
        assert!(!err.contains("unterminated"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
