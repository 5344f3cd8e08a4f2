//! Which provider holds a KEK, and the settings of each provider's ecosystem, as the config
//! module found them. Reading the process environment is the caller's job: the server's config
//! module and the CLI pass a lookup to [`ProviderSettings::from_lookup`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use zeroize::Zeroizing;

use crate::{KekBackend, KeyError};

/// Where a KEK lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProviderKind {
    /// In process memory (`LOCAL_KEK_BASE64`).
    Local,
    /// A PKCS#11 token (an HSM, or SoftHSM2).
    Pkcs11,
    /// AWS KMS (or an endpoint speaking its API).
    AwsKms,
    /// HashiCorp Vault / OpenBao Transit: the key never leaves Vault.
    VaultTransit,
    /// HashiCorp Vault / OpenBao KV: the KEK itself is read from a KV path once at start.
    VaultKv,
    /// Azure Key Vault or Managed HSM.
    AzureKeyVault,
}

impl ProviderKind {
    /// Every provider, in the order the docs list them.
    pub const ALL: [ProviderKind; 6] = [
        Self::Local,
        Self::Pkcs11,
        Self::AwsKms,
        Self::VaultTransit,
        Self::VaultKv,
        Self::AzureKeyVault,
    ];

    /// The name used in `KEK_PROVIDER`, KEK ids and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Pkcs11 => "pkcs11",
            Self::AwsKms => "aws-kms",
            Self::VaultTransit => "vault-transit",
            Self::VaultKv => "vault-kv",
            Self::AzureKeyVault => "azure-keyvault",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ProviderKind {
    type Err = KeyError;
    fn from_str(s: &str) -> Result<Self, KeyError> {
        Self::ALL
            .into_iter()
            .find(|k| k.as_str() == s.trim())
            .ok_or_else(|| {
                KeyError::Config(format!(
                    "unknown KEK provider {:?}: expected one of {}",
                    s.trim(),
                    Self::ALL.map(|k| k.as_str()).join(", ")
                ))
            })
    }
}

/// One KEK that is not local: its provider and its reference there (`KEK_REF`: a PKCS#11 key
/// label, a KMS key ARN or id, a Transit key name, a KV path, an Azure key name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KekSpec {
    /// The provider.
    pub provider: ProviderKind,
    /// The key's reference in it.
    pub key_ref: String,
}

/// Timeouts, retries and circuit breaking around every remote call.
#[derive(Debug, Clone)]
pub struct CallSettings {
    /// One attempt's time limit (`KEK_PROVIDER_TIMEOUT`, default 2 s).
    pub timeout: Duration,
    /// Attempts after the first for a retryable failure (`KEK_PROVIDER_RETRIES`, default 2).
    pub retries: u32,
    /// First backoff; doubled per retry, with full jitter (100 ms).
    pub backoff: Duration,
    /// Consecutive failed calls that open the circuit (`KEK_PROVIDER_CIRCUIT_FAILURES`, 5).
    pub circuit_failures: u32,
    /// How long an open circuit fails fast before a probe (`KEK_PROVIDER_CIRCUIT_COOLDOWN`, 5 s).
    pub circuit_cooldown: Duration,
}

impl Default for CallSettings {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            retries: 2,
            backoff: Duration::from_millis(100),
            circuit_failures: 5,
            circuit_cooldown: Duration::from_secs(5),
        }
    }
}

/// The DEK cache (off unless `KEK_DEK_CACHE_TTL` is set).
#[derive(Debug, Clone, Default)]
pub struct CacheSettings {
    /// How long an unwrapped DEK may be reused (`KEK_DEK_CACHE_TTL`, e.g. `60s`); `None`: off.
    pub ttl: Option<Duration>,
    /// At most this many DEKs (`KEK_DEK_CACHE_MAX_ENTRIES`, default 10000).
    pub max_entries: usize,
}

/// AWS: the standard variables and part of the credential chain (environment, the shared
/// credentials file's profile, web identity, container credentials; no instance metadata or SSO).
#[derive(Default, Clone)]
pub struct AwsSettings {
    /// `AWS_REGION` (or `AWS_DEFAULT_REGION`).
    pub region: Option<String>,
    /// `AWS_ENDPOINT_URL_KMS` or `AWS_ENDPOINT_URL`: a KMS-compatible endpoint.
    pub endpoint_url: Option<String>,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: Option<Zeroizing<String>>,
    /// `AWS_SESSION_TOKEN`.
    pub session_token: Option<Zeroizing<String>>,
    /// `AWS_SHARED_CREDENTIALS_FILE` (default `~/.aws/credentials`).
    pub shared_credentials_file: Option<PathBuf>,
    /// `AWS_PROFILE` (default `default`).
    pub profile: Option<String>,
    /// `AWS_WEB_IDENTITY_TOKEN_FILE`: web identity (EKS IRSA), with `role_arn`.
    pub web_identity_token_file: Option<PathBuf>,
    /// `AWS_ROLE_ARN`: the role to assume with the web identity token.
    pub role_arn: Option<String>,
    /// `AWS_ROLE_SESSION_NAME` (default `rcrt-server`).
    pub role_session_name: Option<String>,
    /// `AWS_ENDPOINT_URL_STS` or `AWS_ENDPOINT_URL`: an STS-compatible endpoint.
    pub sts_endpoint_url: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` (ECS): a path on `http://169.254.170.2`.
    pub container_credentials_relative_uri: Option<String>,
    /// `AWS_CONTAINER_CREDENTIALS_FULL_URI` (EKS Pod Identity, or a loopback/https endpoint).
    pub container_credentials_full_uri: Option<String>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN`: the container endpoint's `Authorization` header.
    pub container_authorization_token: Option<Zeroizing<String>>,
    /// `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE`: the same, read from a file at each fetch.
    pub container_authorization_token_file: Option<PathBuf>,
}

impl std::fmt::Debug for AwsSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AwsSettings")
            .field("region", &self.region)
            .field("endpoint_url", &self.endpoint_url)
            .field("access_key_id", &self.access_key_id)
            .field(
                "secret_access_key",
                &self.secret_access_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "[REDACTED]"),
            )
            .field("shared_credentials_file", &self.shared_credentials_file)
            .field("profile", &self.profile)
            .field("web_identity_token_file", &self.web_identity_token_file)
            .field("role_arn", &self.role_arn)
            .field("role_session_name", &self.role_session_name)
            .field("sts_endpoint_url", &self.sts_endpoint_url)
            .field(
                "container_credentials_relative_uri",
                &self.container_credentials_relative_uri,
            )
            .field(
                "container_credentials_full_uri",
                &self.container_credentials_full_uri,
            )
            .field(
                "container_authorization_token",
                &self
                    .container_authorization_token
                    .as_ref()
                    .map(|_| "[REDACTED]"),
            )
            .field(
                "container_authorization_token_file",
                &self.container_authorization_token_file,
            )
            .finish()
    }
}

/// HashiCorp Vault / OpenBao.
#[derive(Default, Clone)]
pub struct VaultSettings {
    /// `VAULT_ADDR`.
    pub addr: Option<String>,
    /// `VAULT_TOKEN`.
    pub token: Option<Zeroizing<String>>,
    /// `VAULT_TOKEN_FILE`.
    pub token_file: Option<PathBuf>,
    /// `VAULT_NAMESPACE`.
    pub namespace: Option<String>,
    /// `VAULT_TRANSIT_MOUNT` (default `transit`).
    pub transit_mount: Option<String>,
    /// `VAULT_CACERT`: a PEM file of CA certificates to trust for `VAULT_ADDR`.
    pub ca_cert: Option<PathBuf>,
}

impl std::fmt::Debug for VaultSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSettings")
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "[REDACTED]"))
            .field("token_file", &self.token_file)
            .field("namespace", &self.namespace)
            .field("transit_mount", &self.transit_mount)
            .field("ca_cert", &self.ca_cert)
            .finish()
    }
}

/// Azure Key Vault / Managed HSM, with a client-credentials (service principal) sign-in.
#[derive(Debug, Default, Clone)]
pub struct AzureSettings {
    /// `AZURE_KEY_VAULT_URL`, e.g. `https://rcrt-vault.vault.azure.net/`.
    pub vault_url: Option<String>,
    /// `AZURE_TENANT_ID`.
    pub tenant_id: Option<String>,
    /// `AZURE_CLIENT_ID`.
    pub client_id: Option<String>,
    /// `AZURE_CLIENT_SECRET_FILE` (the secret only ever from a file).
    pub client_secret_file: Option<PathBuf>,
    /// `AZURE_AUTHORITY_HOST` (default `https://login.microsoftonline.com`).
    pub authority_host: Option<String>,
}

/// A PKCS#11 token.
#[derive(Debug, Default, Clone)]
pub struct Pkcs11Settings {
    /// `PKCS11_MODULE`: the module's `.so` path.
    pub module: Option<PathBuf>,
    /// `PKCS11_TOKEN_LABEL`.
    pub token_label: Option<String>,
    /// `PKCS11_PIN_FILE` (the user PIN only ever from a file).
    pub pin_file: Option<PathBuf>,
    /// `PKCS11_SESSIONS`: logged-in sessions kept open (default 4).
    pub sessions: Option<usize>,
}

/// Everything a provider may need, shared by the current, old and recovery KEKs.
#[derive(Debug, Default, Clone)]
pub struct ProviderSettings {
    /// Timeouts, retries, circuit.
    pub call: CallSettings,
    /// The DEK cache.
    pub cache: CacheSettings,
    /// AWS.
    pub aws: AwsSettings,
    /// Vault / OpenBao.
    pub vault: VaultSettings,
    /// Azure.
    pub azure: AzureSettings,
    /// PKCS#11.
    pub pkcs11: Pkcs11Settings,
}

/// Reads a file named by a `_FILE` variable into a zeroizing string, trimmed; the error names
/// the variable and the path, never the content.
pub fn read_secret_file(var: &str, path: &std::path::Path) -> Result<Zeroizing<String>, KeyError> {
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
        KeyError::Config(format!("cannot read {var} file {}: {e}", path.display()))
    })?);
    let trimmed = Zeroizing::new(text.trim().to_owned());
    if trimmed.is_empty() {
        return Err(KeyError::Config(format!(
            "{var} names {}, which is empty",
            path.display()
        )));
    }
    Ok(trimmed)
}

/// Sets up the backend for one remote KEK. `Local` is not built here (its KEKs come from
/// [`crate::KekSources`]).
pub async fn build_backend(
    spec: &KekSpec,
    settings: &ProviderSettings,
) -> Result<Arc<dyn KekBackend>, KeyError> {
    match spec.provider {
        ProviderKind::Local => Err(KeyError::Config(
            "a local KEK comes from LOCAL_KEK_BASE64, not from KEK_REF".into(),
        )),
        ProviderKind::Pkcs11 => Ok(Arc::new(
            crate::pkcs11::Pkcs11Kek::connect(&spec.key_ref, &settings.pkcs11).await?,
        )),
        ProviderKind::AwsKms => Ok(Arc::new(
            crate::aws_kms::AwsKmsKek::connect(&spec.key_ref, &settings.aws, &settings.call)
                .await?,
        )),
        ProviderKind::VaultTransit => Ok(Arc::new(
            crate::vault::TransitKek::connect(&spec.key_ref, &settings.vault, &settings.call)
                .await?,
        )),
        ProviderKind::VaultKv => Ok(Arc::new(crate::LocalKek::new(
            crate::vault::read_kv_kek(&spec.key_ref, &settings.vault, &settings.call).await?,
        ))),
        ProviderKind::AzureKeyVault => Ok(Arc::new(
            crate::azure::AzureKek::connect(&spec.key_ref, &settings.azure, &settings.call).await?,
        )),
    }
}
