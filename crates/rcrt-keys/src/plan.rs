//! Which KEKs a server or an `rcrt` job uses, and where each lives: the variables of the README's
//! KEK table, read through the caller's lookup, and the [`Keyring`] built from them.

use std::path::PathBuf;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::keyring::KeySource;
use crate::parse::{load_local_old, local_current_given};
use crate::settings::{
    read_secret_file, AwsSettings, AzureSettings, CacheSettings, CallSettings, Pkcs11Settings,
    VaultSettings,
};
use crate::{
    build_backend, load_local_keyring, parse_kek, KekError, KekSources, KekSpec, KeyError, Keyring,
    ProviderKind, ProviderSettings,
};

/// Where the recovery KEK comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoverySource {
    /// A local KEK in a file (`RECOVERY_KEK_BASE64_FILE`).
    File(PathBuf),
    /// A KEK in a provider (`RECOVERY_KEK_PROVIDER`, `RECOVERY_KEK_REF`).
    Remote(KekSpec),
}

/// The KEK set-up, as configured (no key material: local KEKs stay in [`KekSources`]).
#[derive(Debug, Clone)]
pub struct KekPlan {
    /// The current KEK's provider (`KEK_PROVIDER`, default `local`); its reference when remote.
    pub current: Option<KekSpec>,
    /// Old KEKs in remote providers (`KEK_PROVIDER_OLD`, `KEK_REF_OLD`).
    pub old: Vec<KekSpec>,
    /// The recovery KEK, if any.
    pub recovery: Option<RecoverySource>,
    /// Provider settings shared by all of them.
    pub settings: ProviderSettings,
    /// How often the health task probes remote KEKs (`KEK_PROVIDER_PROBE_INTERVAL`, 30 s).
    pub probe_interval: Duration,
}

/// Why the KEK set-up could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    /// The local KEK variables (the guide's messages).
    #[error(transparent)]
    Local(#[from] KekError),
    /// A provider's settings or the provider itself.
    #[error("{0}")]
    Provider(#[from] KeyError),
}

fn config(msg: impl Into<String>) -> KeyError {
    KeyError::Config(msg.into())
}

fn duration(
    get: &dyn Fn(&str) -> Option<Zeroizing<String>>,
    var: &str,
    default: Duration,
) -> Result<Duration, KeyError> {
    match get(var) {
        None => Ok(default),
        Some(v) => humantime::parse_duration(v.trim())
            .map_err(|e| config(format!("{var}: {e} (examples: 500ms, 2s, 1m)"))),
    }
}

fn number<T: std::str::FromStr>(
    get: &dyn Fn(&str) -> Option<Zeroizing<String>>,
    var: &str,
    default: T,
) -> Result<T, KeyError> {
    match get(var) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| config(format!("{var}: must be a whole number"))),
    }
}

impl ProviderSettings {
    /// Reads every provider's variables through `get`.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<Zeroizing<String>>) -> Result<Self, KeyError> {
        let plain = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let path = |k: &str| plain(k).map(PathBuf::from);
        let defaults = CallSettings::default();
        let timeout = duration(get, "KEK_PROVIDER_TIMEOUT", defaults.timeout)?;
        if timeout.is_zero() {
            return Err(config(
                "KEK_PROVIDER_TIMEOUT: must be more than 0 (e.g. 2s)",
            ));
        }
        let call = CallSettings {
            timeout,
            retries: number(get, "KEK_PROVIDER_RETRIES", defaults.retries)?,
            backoff: defaults.backoff,
            circuit_failures: number(
                get,
                "KEK_PROVIDER_CIRCUIT_FAILURES",
                defaults.circuit_failures,
            )?
            .max(1),
            circuit_cooldown: duration(
                get,
                "KEK_PROVIDER_CIRCUIT_COOLDOWN",
                defaults.circuit_cooldown,
            )?,
        };
        let cache = CacheSettings {
            ttl: match get("KEK_DEK_CACHE_TTL") {
                None => None,
                Some(_) => Some(duration(get, "KEK_DEK_CACHE_TTL", Duration::ZERO)?)
                    .filter(|d| !d.is_zero()),
            },
            max_entries: number(get, "KEK_DEK_CACHE_MAX_ENTRIES", 10_000usize)?,
        };
        Ok(Self {
            call,
            cache,
            aws: AwsSettings {
                region: plain("AWS_REGION").or_else(|| plain("AWS_DEFAULT_REGION")),
                endpoint_url: plain("AWS_ENDPOINT_URL_KMS").or_else(|| plain("AWS_ENDPOINT_URL")),
                access_key_id: plain("AWS_ACCESS_KEY_ID"),
                secret_access_key: get("AWS_SECRET_ACCESS_KEY"),
                session_token: get("AWS_SESSION_TOKEN"),
                shared_credentials_file: path("AWS_SHARED_CREDENTIALS_FILE"),
                profile: plain("AWS_PROFILE"),
                web_identity_token_file: path("AWS_WEB_IDENTITY_TOKEN_FILE"),
                role_arn: plain("AWS_ROLE_ARN"),
                role_session_name: plain("AWS_ROLE_SESSION_NAME"),
                sts_endpoint_url: plain("AWS_ENDPOINT_URL_STS")
                    .or_else(|| plain("AWS_ENDPOINT_URL")),
                container_credentials_relative_uri: plain("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"),
                container_credentials_full_uri: plain("AWS_CONTAINER_CREDENTIALS_FULL_URI"),
                container_authorization_token: get("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
                container_authorization_token_file: path("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE"),
            },
            vault: VaultSettings {
                addr: plain("VAULT_ADDR"),
                token: get("VAULT_TOKEN"),
                token_file: path("VAULT_TOKEN_FILE"),
                namespace: plain("VAULT_NAMESPACE"),
                transit_mount: plain("VAULT_TRANSIT_MOUNT"),
                ca_cert: path("VAULT_CACERT"),
            },
            azure: AzureSettings {
                vault_url: plain("AZURE_KEY_VAULT_URL"),
                tenant_id: plain("AZURE_TENANT_ID"),
                client_id: plain("AZURE_CLIENT_ID"),
                client_secret_file: path("AZURE_CLIENT_SECRET_FILE"),
                authority_host: plain("AZURE_AUTHORITY_HOST"),
            },
            pkcs11: Pkcs11Settings {
                module: path("PKCS11_MODULE"),
                token_label: plain("PKCS11_TOKEN_LABEL"),
                pin_file: path("PKCS11_PIN_FILE"),
                sessions: match plain("PKCS11_SESSIONS") {
                    None => None,
                    Some(_) => Some(number(get, "PKCS11_SESSIONS", 4usize)?.max(1)),
                },
            },
        })
    }
}

/// The key reference of a remote current KEK: `KEK_REF`, or the ecosystem's own name for it.
fn current_ref(
    provider: ProviderKind,
    get: &dyn Fn(&str) -> Option<Zeroizing<String>>,
) -> Result<String, KeyError> {
    let plain = |k: &str| {
        get(k)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let alias = match provider {
        ProviderKind::AwsKms => Some("AWS_KMS_KEY_ID"),
        ProviderKind::AzureKeyVault => Some("AZURE_KEY_NAME"),
        _ => None,
    };
    let by_alias = alias.and_then(|a| plain(a).map(|v| (a, v)));
    match (plain("KEK_REF"), by_alias) {
        (Some(r), Some((a, v))) if r != v => Err(config(format!(
            "KEK_REF and {a} name different keys: set only one"
        ))),
        (Some(r), _) => Ok(r),
        (None, Some((_, v))) => Ok(v),
        (None, None) => Err(config(format!(
            "KEK_PROVIDER={provider} needs KEK_REF (the key's {}){}",
            match provider {
                ProviderKind::Pkcs11 => "label on the token",
                ProviderKind::AwsKms => "id, ARN or alias",
                ProviderKind::VaultTransit => "Transit key name",
                ProviderKind::VaultKv => "KV path, e.g. secret/rcrt/kek#value",
                _ => "name",
            },
            alias.map(|a| format!(", or {a}")).unwrap_or_default()
        ))),
    }
}

impl KekPlan {
    /// Reads the KEK variables other than the local KEK text (which stays in
    /// [`KekSources`]) through `get`.
    pub fn from_lookup(get: &dyn Fn(&str) -> Option<Zeroizing<String>>) -> Result<Self, KeyError> {
        let plain = |k: &str| {
            get(k)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        let provider: ProviderKind = match plain("KEK_PROVIDER") {
            Some(p) => p.parse()?,
            None => ProviderKind::Local,
        };
        let current = match provider {
            ProviderKind::Local => {
                // The guide's KMS examples set only these: without KEK_PROVIDER the server would
                // go on with a local KEK while the operator believes the KMS holds it.
                if let Some(var) = ["KEK_REF", "AWS_KMS_KEY_ID", "AZURE_KEY_NAME"]
                    .into_iter()
                    .find(|v| plain(v).is_some())
                {
                    return Err(config(format!(
                        "{var} is set but KEK_PROVIDER is local (or unset): set KEK_PROVIDER to the provider holding that key (aws-kms for AWS_KMS_KEY_ID, azure-keyvault for AZURE_KEY_NAME)"
                    )));
                }
                None
            }
            p => Some(KekSpec {
                provider: p,
                key_ref: current_ref(p, get)?,
            }),
        };
        if plain("AZURE_CLIENT_SECRET").is_some() {
            return Err(config(
                "AZURE_CLIENT_SECRET is not read (a secret in the environment is visible to every child process and in /proc): put the client secret in a file readable only by the server and set AZURE_CLIENT_SECRET_FILE",
            ));
        }
        let old = match (plain("KEK_PROVIDER_OLD"), plain("KEK_REF_OLD")) {
            (None, None) => Vec::new(),
            (Some(p), Some(refs)) => {
                let provider: ProviderKind = p.parse()?;
                if provider == ProviderKind::Local {
                    return Err(config(
                        "KEK_PROVIDER_OLD=local: give old local KEKs in LOCAL_KEK_BASE64_OLD",
                    ));
                }
                refs.split(',')
                    .map(str::trim)
                    .filter(|r| !r.is_empty())
                    .map(|r| KekSpec {
                        provider,
                        key_ref: r.to_owned(),
                    })
                    .collect()
            }
            (Some(_), None) => return Err(config("KEK_PROVIDER_OLD is set without KEK_REF_OLD")),
            (None, Some(_)) => return Err(config("KEK_REF_OLD is set without KEK_PROVIDER_OLD")),
        };
        let recovery = match (
            plain("RECOVERY_KEK_BASE64_FILE"),
            plain("RECOVERY_KEK_PROVIDER"),
            plain("RECOVERY_KEK_REF"),
        ) {
            (None, None, None) => None,
            (Some(f), None, None) => Some(RecoverySource::File(PathBuf::from(f))),
            (None, Some(p), Some(r)) => {
                let provider: ProviderKind = p.parse()?;
                if matches!(provider, ProviderKind::Local | ProviderKind::VaultKv) {
                    return Err(config(
                        "RECOVERY_KEK_PROVIDER: a local recovery KEK comes from RECOVERY_KEK_BASE64_FILE",
                    ));
                }
                Some(RecoverySource::Remote(KekSpec {
                    provider,
                    key_ref: r,
                }))
            }
            (Some(_), Some(_), _) => {
                return Err(config(
                    "both RECOVERY_KEK_BASE64_FILE and RECOVERY_KEK_PROVIDER are set: set only one",
                ))
            }
            _ => {
                return Err(config(
                    "RECOVERY_KEK_PROVIDER and RECOVERY_KEK_REF go together",
                ))
            }
        };
        Ok(Self {
            current,
            old,
            recovery,
            settings: ProviderSettings::from_lookup(get)?,
            probe_interval: duration(get, "KEK_PROVIDER_PROBE_INTERVAL", Duration::from_secs(30))?,
        })
    }

    /// True when any KEK lives outside the process (the health task is worth running).
    pub fn has_remote(&self) -> bool {
        self.current.is_some()
            || !self.old.is_empty()
            || matches!(self.recovery, Some(RecoverySource::Remote(_)))
    }

    /// Builds the keyring: local KEKs from `sources`, remote ones connected (and checked) now.
    pub async fn build(&self, sources: &KekSources) -> Result<Keyring, KeyringError> {
        self.build_inner(sources, None).await
    }

    /// Builds the keyring with a local current KEK and old local KEKs given another way (an
    /// `rcrt` job's flags or stdin); remote old KEKs and the recovery KEK still come from the
    /// plan. Refused when the plan names a remote current KEK too.
    pub async fn build_with_local(
        &self,
        ring: crate::LocalKeyring,
    ) -> Result<Keyring, KeyringError> {
        if let Some(spec) = &self.current {
            return Err(config(format!(
                "a local KEK was given, but KEK_PROVIDER={} names another current KEK: unset KEK_PROVIDER, or give no local KEK",
                spec.provider
            ))
            .into());
        }
        self.build_inner(&KekSources::default(), Some(ring)).await
    }

    async fn build_inner(
        &self,
        sources: &KekSources,
        given: Option<crate::LocalKeyring>,
    ) -> Result<Keyring, KeyringError> {
        let (current, mut old) = match &self.current {
            None => {
                let ring = match given {
                    Some(ring) => ring,
                    None => load_local_keyring(sources)?,
                };
                if ring.current_also_old() {
                    tracing::warn!(
                        kek_id = %ring.current().id(),
                        "the same KEK is given as current (LOCAL_KEK_BASE64) and as old (LOCAL_KEK_BASE64_OLD); it is used once. During a rotation the old one should be the previous KEK: with the new one there twice, DEKs still under the previous KEK cannot be unwrapped"
                    );
                }
                let (current, old) = ring.into_keys();
                (
                    KeySource::Local(current),
                    old.into_iter().map(KeySource::Local).collect::<Vec<_>>(),
                )
            }
            Some(spec) => {
                if local_current_given(sources) {
                    return Err(config(format!(
                        "LOCAL_KEK_BASE64 (or LOCAL_KEK_BASE64_FILE) is set but KEK_PROVIDER={}: the current KEK is the provider's. To move a store off a local KEK, give it as LOCAL_KEK_BASE64_OLD and let the re-wrap run",
                        spec.provider
                    ))
                    .into());
                }
                let current = match spec.provider {
                    // The KV flow reads the KEK itself: refuse the guide's published example,
                    // as for LOCAL_KEK_BASE64.
                    ProviderKind::VaultKv => {
                        let backend = crate::vault::read_kv_kek(
                            &spec.key_ref,
                            &self.settings.vault,
                            &self.settings.call,
                        )
                        .await?;
                        crate::refuse_published_example(&backend, &spec.key_ref)?;
                        KeySource::Local(backend)
                    }
                    _ => KeySource::Remote(build_backend(spec, &self.settings).await?),
                };
                let old = load_local_old(sources)?
                    .into_iter()
                    .map(KeySource::Local)
                    .collect();
                (current, old)
            }
        };
        for spec in &self.old {
            old.push(match spec.provider {
                ProviderKind::VaultKv => KeySource::Local(
                    crate::vault::read_kv_kek(
                        &spec.key_ref,
                        &self.settings.vault,
                        &self.settings.call,
                    )
                    .await?,
                ),
                _ => KeySource::Remote(build_backend(spec, &self.settings).await?),
            });
        }
        let recovery = match &self.recovery {
            None => None,
            Some(RecoverySource::File(path)) => {
                let text = read_secret_file("RECOVERY_KEK_BASE64_FILE", path)?;
                let name = path.display().to_string();
                let kek = parse_kek(&text, &name)?;
                // A recovery wrap under a public key would let anyone with the database read
                // every secret without the KMS.
                crate::refuse_published_example(&kek, &name)?;
                Some(KeySource::Local(kek))
            }
            Some(RecoverySource::Remote(spec)) => Some(KeySource::Remote(
                build_backend(spec, &self.settings).await?,
            )),
        };
        Ok(Keyring::new(
            current,
            old,
            recovery,
            &self.settings.call,
            &self.settings.cache,
        ))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashMap;

    fn plan(pairs: &[(&str, &str)]) -> Result<KekPlan, KeyError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        KekPlan::from_lookup(&|k| map.get(k).map(|v| Zeroizing::new(v.clone())))
    }

    #[test]
    fn reads_providers_aliases_and_refuses_ambiguity() {
        let p = plan(&[]).unwrap();
        assert!(p.current.is_none() && !p.has_remote());
        let p = plan(&[
            ("KEK_PROVIDER", "aws-kms"),
            ("AWS_KMS_KEY_ID", "alias/rcrt"),
        ])
        .unwrap();
        assert_eq!(p.current.unwrap().key_ref, "alias/rcrt");
        let p = plan(&[
            ("KEK_PROVIDER", "azure-keyvault"),
            ("AZURE_KEY_NAME", "rcrt-kek"),
        ])
        .unwrap();
        assert_eq!(p.current.unwrap().provider, ProviderKind::AzureKeyVault);
        let e = plan(&[
            ("KEK_PROVIDER", "aws-kms"),
            ("KEK_REF", "a"),
            ("AWS_KMS_KEY_ID", "b"),
        ]);
        assert!(e.unwrap_err().to_string().contains("different keys"));
        let e = plan(&[("KEK_PROVIDER", "pkcs11")]).unwrap_err().to_string();
        assert!(e.contains("needs KEK_REF") && e.contains("label"), "{e}");
        let e = plan(&[("KEK_PROVIDER", "gcp-kms")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown KEK provider") && e.contains("vault-transit"),
            "{e}"
        );
        for var in ["KEK_REF", "AWS_KMS_KEY_ID", "AZURE_KEY_NAME"] {
            let e = plan(&[(var, "x")]).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains("KEK_PROVIDER"), "{e}");
        }
        assert!(plan(&[("KEK_PROVIDER_TIMEOUT", "0s")]).is_err());
        let e = plan(&[("AZURE_CLIENT_SECRET", "s3cr3t-value")])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("AZURE_CLIENT_SECRET_FILE") && !e.contains("s3cr3t"),
            "{e}"
        );
        let p = plan(&[
            ("KEK_PROVIDER_OLD", "vault-transit"),
            ("KEK_REF_OLD", "a, b"),
        ])
        .unwrap();
        assert_eq!(p.old.len(), 2);
        assert!(p.has_remote());
        assert!(plan(&[("KEK_PROVIDER_OLD", "pkcs11")]).is_err());
        let p = plan(&[("RECOVERY_KEK_BASE64_FILE", "/r")]).unwrap();
        assert_eq!(p.recovery, Some(RecoverySource::File("/r".into())));
        assert!(plan(&[
            ("RECOVERY_KEK_BASE64_FILE", "/r"),
            ("RECOVERY_KEK_PROVIDER", "aws-kms")
        ])
        .is_err());
        let p = plan(&[
            ("KEK_PROVIDER_TIMEOUT", "250ms"),
            ("KEK_DEK_CACHE_TTL", "1m"),
        ])
        .unwrap();
        assert_eq!(p.settings.call.timeout, Duration::from_millis(250));
        assert_eq!(p.settings.cache.ttl, Some(Duration::from_secs(60)));
        assert!(plan(&[("KEK_PROVIDER_RETRIES", "many")]).is_err());
    }

    #[tokio::test]
    async fn the_published_example_is_refused_as_recovery_kek() {
        let dir = std::env::temp_dir().join(format!("rcrt-plan-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("recovery.kek");
        // The production guide's "example output" of `openssl rand -base64 32`.
        std::fs::write(&file, "xKj3n9vP2qR8wT5yL6mN0aB4cD7eF1gH2iJ3kL4mN5o=\n").unwrap();
        let p = plan(&[("RECOVERY_KEK_BASE64_FILE", file.to_str().unwrap())]).unwrap();
        let sources = KekSources {
            current: Some(Zeroizing::new(
                "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_owned(),
            )),
            ..KekSources::default()
        };
        let e = p.build(&sources).await.unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(e.contains("published example"), "{e}");
    }

    #[tokio::test]
    async fn a_local_kek_beside_a_remote_provider_is_refused() {
        let p = plan(&[("KEK_PROVIDER", "aws-kms"), ("KEK_REF", "k")]).unwrap();
        let sources = KekSources {
            current: Some(Zeroizing::new("x".repeat(44))),
            ..KekSources::default()
        };
        let e = p.build(&sources).await.unwrap_err().to_string();
        assert!(e.contains("LOCAL_KEK_BASE64_OLD"), "{e}");
    }
}
