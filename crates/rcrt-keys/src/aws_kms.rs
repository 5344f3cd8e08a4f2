//! AWS KMS: `Encrypt`/`Decrypt` of each DEK under a symmetric KMS key, with the row's
//! associated data as the encryption context.
//!
//! Why not the AWS SDK for Rust: it added 10-15 minutes to a cold release build here, for three
//! API calls. KMS speaks a small JSON protocol (`POST /` with `X-Amz-Target:
//! TrentService.<Operation>` and `Content-Type: application/x-amz-json-1.1`), so this module
//! sends it over the HTTP client the workspace already has and signs each request with AWS's
//! own SigV4 signer (`aws-sigv4`), which is the part worth not writing ourselves.
//!
//! Credentials come from the standard chain, in its order, the first link that has them:
//! 1. the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`);
//! 2. a profile of the shared credentials file (`AWS_SHARED_CREDENTIALS_FILE`, default
//!    `~/.aws/credentials`; `AWS_PROFILE`, default `default`), if the file exists;
//! 3. web identity (EKS IRSA and the like): `AWS_WEB_IDENTITY_TOKEN_FILE` + `AWS_ROLE_ARN`
//!    (`AWS_ROLE_SESSION_NAME`, default `rcrt-server`), exchanged for a session by an unsigned
//!    STS `AssumeRoleWithWebIdentity` at `https://sts.<region>.amazonaws.com/` (or
//!    `AWS_ENDPOINT_URL_STS` / `AWS_ENDPOINT_URL`);
//! 4. container credentials (ECS, EKS Pod Identity): `GET http://169.254.170.2` +
//!    `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI`, or `AWS_CONTAINER_CREDENTIALS_FULL_URI` (https, or
//!    http on a loopback host or on 169.254.170.2 / 169.254.170.23 / fd00:ec2::23), with
//!    `Authorization` from `AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE` (read at each fetch) or
//!    `AWS_CONTAINER_AUTHORIZATION_TOKEN`.
//!
//! Not implemented: EC2 instance metadata (IMDS), SSO, `credential_process` and role assumption
//! from `~/.aws/config`. Credentials are read at start. Those of links 3 and 4 expire: they are
//! fetched again at the first call that finds less than five minutes left (the token file
//! read again each time, as Kubernetes rotates it), and when KMS rejects them
//! (`ExpiredTokenException`, `UnrecognizedClientException`, `InvalidSignatureException`). Those
//! from the shared credentials file are read again when KMS rejects them. In both cases the
//! call is repeated once if the credentials are now other ones: a tool that renews a session
//! token in the file is picked up without a restart. Credentials from the environment cannot
//! change under a running process.
//!
//! KEK id: `remote_kek_id(aws-kms, <key ARN>)`, the ARN being the one `DescribeKey` answers at
//! start. One key has one id whether `KEK_REF` names it by key id, ARN, alias or alias ARN; an
//! alias repointed to another key is another id, so rows wrapped under the old key are named by
//! the start-up check (configure the old key as `KEK_REF_OLD`) instead of failing as tampering.
//!
//! The HTTP client follows no redirect (a request body carries a DEK), and the endpoint must be
//! `https://` except on a loopback host (127.0.0.1, ::1, localhost: the tests' moto).
//!
//! Wrapped DEK bytes: `0x01 | alg::AWS_KMS | CiphertextBlob`. The encryption context is
//! readable (see [`encryption_context`]) so that CloudTrail shows which secret version each
//! `Decrypt` was for, and an IAM condition can limit the key to rcrt's DEKs.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::RwLock;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_credential_types::Credentials;
use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use rcrt_crypto::{CryptoError, Dek, KekId, WrapContext, WrappedDek};
use serde::Deserialize;
use zeroize::Zeroizing;

use crate::settings::{AwsSettings, CallSettings};
use crate::{alg, remote_kek_id, KekBackend, KeyError, ProviderKind};

/// The wrapped-DEK header of this provider.
const HEADER: [u8; 2] = [0x01, alg::AWS_KMS];

/// Longest provider message kept in an error (KMS messages are short; this bounds odd ones).
const MAX_REASON: usize = 300;

/// Expiring credentials are fetched again at the first call that finds less than this left.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);

/// `AWS_ROLE_SESSION_NAME` when unset.
const DEFAULT_SESSION_NAME: &str = "rcrt-server";

/// The ECS agent's credentials host (`AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` is a path on it).
const ECS_HOST: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 170, 2);
/// The EKS Pod Identity agent's host (IPv4).
const EKS_HOST_V4: std::net::Ipv4Addr = std::net::Ipv4Addr::new(169, 254, 170, 23);
/// The EKS Pod Identity agent's host (IPv6, `fd00:ec2::23`).
const EKS_HOST_V6: std::net::Ipv6Addr = std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23);

/// A KEK in AWS KMS (or a service speaking its API, such as moto).
pub struct AwsKmsKek {
    id: KekId,
    /// The key as configured (`KEK_REF` / `AWS_KMS_KEY_ID`): key id, key ARN, alias or alias ARN.
    key_ref: String,
    /// The key's ARN, from `DescribeKey` at start: what `Encrypt` and `Decrypt` name, so an alias
    /// repointed later does not silently switch keys under a running server.
    key_arn: String,
    region: String,
    endpoint: url::Url,
    /// Replaced when the shared credentials file holds new ones after KMS rejected these.
    credentials: RwLock<Credentials>,
    /// Where `credentials` came from, if from the shared credentials file.
    shared_file: Option<SharedFile>,
    /// Where `credentials` are fetched again before they expire (web identity, container).
    refresher: Option<Refresher>,
    /// One fetch from `refresher` at a time.
    refresh_lock: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

/// A profile of the shared credentials file, read again when KMS rejects the credentials.
#[derive(Debug, Clone)]
struct SharedFile {
    path: PathBuf,
    profile: String,
}

impl std::fmt::Debug for AwsKmsKek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Credentials`' own Debug redacts the secret; leave them out altogether anyway.
        f.debug_struct("AwsKmsKek")
            .field("id", &self.id)
            .field("key_ref", &self.key_ref)
            .field("key_arn", &self.key_arn)
            .field("region", &self.region)
            .field("endpoint", &self.endpoint.as_str())
            .field("shared_file", &self.shared_file)
            .field("credential_source", &self.credential_source())
            .field("refresher", &self.refresher)
            .finish_non_exhaustive()
    }
}

impl AwsKmsKek {
    /// Connects and checks that the key exists and can be used: `DescribeKey` must show an
    /// enabled `SYMMETRIC_DEFAULT` key for `ENCRYPT_DECRYPT` (a [`KeyError::Config`] otherwise;
    /// [`KeyError::Unavailable`] if KMS cannot be reached).
    ///
    /// The KEK id is derived from the key's ARN as `DescribeKey` answers it, so it is the same
    /// whether `key_ref` is the key id, the key ARN, an alias or an alias ARN, and follows the
    /// key (not the alias name) when an alias is repointed.
    pub async fn connect(
        key_ref: &str,
        settings: &AwsSettings,
        call: &CallSettings,
    ) -> Result<Self, KeyError> {
        let key_ref = key_ref.trim();
        if key_ref.is_empty() {
            return Err(KeyError::Config(
                "aws-kms: KEK_REF (or AWS_KMS_KEY_ID) is empty: set it to the KMS key's ARN".into(),
            ));
        }
        let region = settings
            .region
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .ok_or_else(|| {
                KeyError::Config(format!(
                    "aws-kms key {key_ref}: no region: set AWS_REGION (or AWS_DEFAULT_REGION)"
                ))
            })?
            .to_owned();
        if !region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(KeyError::Config(format!(
                "aws-kms key {key_ref}: AWS_REGION {region:?} is not a region name (like us-east-1)"
            )));
        }
        let endpoint = endpoint_for(settings.endpoint_url.as_deref(), &region)
            .map_err(|why| KeyError::Config(format!("aws-kms key {key_ref}: {why}")))?;
        let config = |why: String| KeyError::Config(format!("aws-kms key {key_ref}: {why}"));
        let (credentials, shared_file, refresher) =
            match static_chain(settings, home_dir().as_deref()).map_err(config)? {
                Ok((credentials, shared_file)) => (credentials, shared_file, None),
                Err(why) => {
                    let refresher = refresher_from_chain(settings, &region, call.timeout)
                        .map_err(config)?
                        .ok_or_else(|| config(no_credentials(&why)))?;
                    let credentials = refresher.fetch().await.map_err(|f| match f {
                        Failure::Unavailable(reason) => KeyError::Unavailable {
                            kek_id: remote_kek_id(ProviderKind::AwsKms, key_ref),
                            provider: ProviderKind::AwsKms,
                            reason,
                        },
                        other => config(other.into_reason()),
                    })?;
                    (credentials, None, Some(refresher))
                }
            };
        let http = http_client(call.timeout, &endpoint).map_err(config)?;
        let mut kek = Self {
            // Until `DescribeKey` names the key's ARN (errors at start carry this one; it is
            // already the final id when `key_ref` is the key ARN).
            id: remote_kek_id(ProviderKind::AwsKms, key_ref),
            key_ref: key_ref.to_owned(),
            key_arn: key_ref.to_owned(),
            region,
            endpoint,
            credentials: RwLock::new(credentials),
            shared_file,
            refresher,
            refresh_lock: tokio::sync::Mutex::new(()),
            http,
        };
        kek.key_arn = kek.describe_key().await?;
        kek.id = remote_kek_id(ProviderKind::AwsKms, &kek.key_arn);
        if key_ref.starts_with("alias/") || key_ref.contains(":alias/") {
            tracing::warn!(
                key_ref = %kek.key_ref,
                key_arn = %kek.key_arn,
                kek_id = %kek.id,
                "aws-kms: KEK_REF is an alias, resolved once at start to the key ARN above, \
                 whose KEK id this is; if the alias is repointed to another key, the next start \
                 refuses the rows wrapped under this key until it is configured as \
                 KEK_PROVIDER_OLD=aws-kms KEK_REF_OLD=<this key ARN>, and the re-wrap then moves \
                 them to the new key (prefer the key ARN in KEK_REF)"
            );
        }
        Ok(kek)
    }

    /// The key's ARN as `DescribeKey` gave it at start.
    pub fn key_arn(&self) -> &str {
        &self.key_arn
    }

    /// The link of the credential chain in use: `environment`, `shared-credentials-file`,
    /// `web-identity` or `container`.
    pub fn credential_source(&self) -> &'static str {
        match (&self.refresher, &self.shared_file) {
            (Some(r), _) => r.source(),
            (None, Some(_)) => "shared-credentials-file",
            (None, None) => "environment",
        }
    }

    /// `DescribeKey`: the key's ARN if it is usable for wrapping DEKs.
    async fn describe_key(&self) -> Result<String, KeyError> {
        let body = serde_json::to_vec(&serde_json::json!({ "KeyId": self.key_ref }))
            .map_err(|e| KeyError::Config(format!("aws-kms: cannot encode DescribeKey: {e}")))?;
        let response = match self.call("DescribeKey", Zeroizing::new(body)).await {
            Ok(r) => r,
            Err(Failure::Unavailable(reason)) => return Err(self.unavailable(reason)),
            Err(
                Failure::Refused(reason) | Failure::Credentials(reason) | Failure::Decrypt(reason),
            ) => {
                return Err(KeyError::Config(format!(
                    "aws-kms key {} at {}: DescribeKey refused: {reason}",
                    self.key_ref, self.endpoint
                )))
            }
        };
        let parsed: DescribeKeyResponse = serde_json::from_slice(&response).map_err(|e| {
            KeyError::Config(format!(
                "aws-kms key {} at {}: DescribeKey answered something that is not KMS's JSON ({e})",
                self.key_ref, self.endpoint
            ))
        })?;
        check_key_metadata(&parsed.key_metadata)
            .map_err(|why| KeyError::Config(format!("aws-kms key {}: {why}", self.key_ref)))?;
        Ok(parsed.key_metadata.arn)
    }

    fn unavailable(&self, reason: String) -> KeyError {
        KeyError::Unavailable {
            kek_id: self.id.clone(),
            provider: ProviderKind::AwsKms,
            reason,
        }
    }

    fn failure(&self, f: Failure) -> KeyError {
        match f {
            Failure::Unavailable(reason) => self.unavailable(reason),
            Failure::Refused(reason) | Failure::Credentials(reason) => KeyError::Refused {
                kek_id: self.id.clone(),
                provider: ProviderKind::AwsKms,
                reason,
            },
            Failure::Decrypt(_) => KeyError::Crypto(CryptoError::Decrypt),
        }
    }

    /// One signed call to KMS; the successful response body. `body` may hold key material: it is
    /// wiped when the request is done with it, and never quoted in an error. Expiring
    /// credentials are fetched again first if less than [`REFRESH_BEFORE`] is left. If KMS
    /// rejects credentials from the shared credentials file, web identity or the container
    /// endpoint and the source now gives other ones, the call is repeated once with them.
    async fn call(
        &self,
        operation: &str,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        self.refresh(None, operation).await?;
        let used = self.current_credentials(operation)?;
        if self.shared_file.is_none() && self.refresher.is_none() {
            return self.call_once(operation, &used, body).await;
        }
        match self.call_once(operation, &used, body.clone()).await {
            Err(Failure::Credentials(reason)) => {
                // Compared with the credentials this call used, not with the ones in use now:
                // concurrent calls rejected together all retry after one of them reloaded.
                if self.refresher.is_some() {
                    if let Err(f) = self.refresh(Some(&used), operation).await {
                        tracing::warn!(
                            kek_id = %self.id,
                            "aws-kms: KMS rejected the {} credentials and fetching new ones \
                             failed: {}",
                            self.credential_source(),
                            f.reason()
                        );
                    }
                } else {
                    self.reload_credentials();
                }
                let now = self.current_credentials(operation)?;
                if same_credentials(&now, &used) {
                    Err(Failure::Credentials(reason))
                } else {
                    self.call_once(operation, &now, body).await
                }
            }
            other => other,
        }
    }

    /// Fetches credentials from the refresher (if any) when due: after KMS rejected `rejected`
    /// (unless a concurrent call already replaced them), else when less than
    /// [`REFRESH_BEFORE`] is left. While the old credentials have not expired, a failed fetch
    /// is logged and they stay in use (the next call tries again).
    async fn refresh(
        &self,
        rejected: Option<&Credentials>,
        operation: &str,
    ) -> Result<(), Failure> {
        let Some(refresher) = &self.refresher else {
            return Ok(());
        };
        if rejected.is_none()
            && !refresh_due(&self.current_credentials(operation)?, SystemTime::now())
        {
            return Ok(());
        }
        let _one_at_a_time = self.refresh_lock.lock().await;
        let current = self.current_credentials(operation)?;
        let now = SystemTime::now();
        let due = match rejected {
            Some(used) => same_credentials(&current, used),
            None => refresh_due(&current, now),
        };
        if !due {
            return Ok(());
        }
        match refresher.fetch().await {
            Ok(fresh) => {
                let expires = fresh.expiry().map(|e| {
                    time::OffsetDateTime::from(e)
                        .format(&time::format_description::well_known::Rfc3339)
                        .unwrap_or_default()
                });
                if let Ok(mut held) = self.credentials.write() {
                    *held = fresh;
                }
                tracing::info!(
                    kek_id = %self.id,
                    source = refresher.source(),
                    expires = expires.as_deref().unwrap_or("never"),
                    "aws-kms: fetched new credentials"
                );
                Ok(())
            }
            Err(f) if rejected.is_none() && current.expiry().is_some_and(|e| e > now) => {
                tracing::warn!(
                    kek_id = %self.id,
                    source = refresher.source(),
                    "aws-kms: cannot renew the credentials yet (the current ones stay in use \
                     until they expire): {}",
                    f.reason()
                );
                Ok(())
            }
            Err(f) => Err(f),
        }
    }

    fn current_credentials(&self, operation: &str) -> Result<Credentials, Failure> {
        self.credentials
            .read()
            .map(|c| c.clone())
            .map_err(|_| Failure::Refused(format!("{operation}: the credentials lock is poisoned")))
    }

    /// After KMS rejected the credentials: reads the shared credentials file again, and uses
    /// what it holds from now on if that differs from the credentials in use.
    fn reload_credentials(&self) {
        let Some(file) = &self.shared_file else {
            return;
        };
        let fresh = match read_shared_file(file, true) {
            Ok(c) => c,
            Err(why) => {
                tracing::warn!(kek_id = %self.id, "aws-kms: {why}");
                return;
            }
        };
        let Ok(mut current) = self.credentials.write() else {
            return;
        };
        if same_credentials(&current, &fresh) {
            return;
        }
        *current = fresh;
        tracing::info!(
            kek_id = %self.id,
            file = %file.path.display(),
            profile = %file.profile,
            "aws-kms: KMS rejected the credentials and the shared credentials file holds new \
             ones: using them"
        );
    }

    /// One attempt of [`AwsKmsKek::call`], signed with `credentials`.
    async fn call_once(
        &self,
        operation: &str,
        credentials: &Credentials,
        body: Zeroizing<Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, Failure> {
        let target = format!("TrentService.{operation}");
        let headers = [
            ("content-type", "application/x-amz-json-1.1"),
            ("x-amz-target", target.as_str()),
        ];
        let identity: Identity = credentials.clone().into();
        let signing_params = v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.region)
            .name("kms")
            .time(SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .map_err(|e| Failure::Refused(format!("{operation}: cannot sign the request: {e}")))?
            .into();
        let signable = SignableRequest::new(
            "POST",
            self.endpoint.as_str(),
            headers.iter().copied(),
            SignableBody::Bytes(&body),
        )
        .map_err(|e| Failure::Refused(format!("{operation}: cannot sign the request: {e}")))?;
        let (instructions, _signature) = sign(signable, &signing_params)
            .map_err(|e| Failure::Refused(format!("{operation}: cannot sign the request: {e}")))?
            .into_parts();

        let mut request = self.http.post(self.endpoint.clone());
        for (name, value) in headers.iter().copied().chain(instructions.headers()) {
            request = request.header(name, value);
        }
        // The body's only copy outside hyper's own buffers is `body`, wiped when the last
        // reference to it goes.
        let request = request.body(reqwest::Body::from(bytes::Bytes::from_owner(body)));

        let mut response = request
            .send()
            .await
            .map_err(|e| Failure::Unavailable(transport_reason(operation, &self.endpoint, &e)))?;
        let status = response.status().as_u16();
        let error_type_header = response
            .headers()
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let out = read_body(&mut response)
            .await
            .map_err(|e| Failure::Unavailable(transport_reason(operation, &self.endpoint, &e)))?;
        if (200..300).contains(&status) {
            Ok(out)
        } else {
            Err(classify_error(
                operation,
                status,
                error_type_header.as_deref(),
                &out,
            ))
        }
    }
}

#[async_trait]
impl KekBackend for AwsKmsKek {
    fn id(&self) -> &KekId {
        &self.id
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::AwsKms
    }

    fn describe(&self) -> String {
        format!(
            "AWS KMS key {} ({}) at {}",
            self.key_ref, self.key_arn, self.endpoint
        )
    }

    async fn wrap(&self, dek: &Dek, ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        if ctx.kek_id != &self.id {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        // 32 bytes are 44 base64 characters; write them into a buffer that is wiped on drop.
        let mut plaintext_b64 = Zeroizing::new([0u8; 44]);
        let n = B64
            .encode_slice(dek.expose_secret(), &mut plaintext_b64[..])
            .map_err(|_| KeyError::Crypto(CryptoError::Encrypt))?;
        let plaintext_b64 = std::str::from_utf8(plaintext_b64.get(..n).unwrap_or_default())
            .map_err(|_| KeyError::Crypto(CryptoError::Encrypt))?;
        let request = EncryptRequest {
            key_id: &self.key_arn,
            plaintext: plaintext_b64,
            encryption_context: encryption_context(ctx),
        };
        let body = to_zeroizing_json(&request)?;
        let response = self
            .call("Encrypt", body)
            .await
            .map_err(|f| self.failure(f))?;
        let parsed: EncryptResponse = serde_json::from_slice(&response)
            .map_err(|_| self.unavailable("Encrypt: the answer is not KMS's JSON".to_owned()))?;
        let blob = B64.decode(parsed.ciphertext_blob.as_bytes()).map_err(|_| {
            self.unavailable("Encrypt: the CiphertextBlob is not base64".to_owned())
        })?;
        if blob.is_empty() {
            return Err(self.unavailable("Encrypt: empty CiphertextBlob".to_owned()));
        }
        let mut stored = Vec::with_capacity(HEADER.len() + blob.len());
        stored.extend_from_slice(&HEADER);
        stored.extend_from_slice(&blob);
        Ok(WrappedDek::from_stored(stored))
    }

    async fn unwrap(&self, wrapped: &WrappedDek, ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        if ctx.kek_id != &self.id {
            return Err(KeyError::UnknownKek(ctx.kek_id.clone()));
        }
        let blob = match wrapped.as_bytes().split_at_checked(HEADER.len()) {
            Some((header, blob)) if header == HEADER && !blob.is_empty() => blob,
            _ => {
                return Err(KeyError::Crypto(CryptoError::Format(
                    "not an aws-kms wrapped DEK",
                )))
            }
        };
        let request = DecryptRequest {
            ciphertext_blob: B64.encode(blob),
            key_id: &self.key_arn,
            encryption_context: encryption_context(ctx),
        };
        let body = to_zeroizing_json(&request)?;
        let response = self
            .call("Decrypt", body)
            .await
            .map_err(|f| self.failure(f))?;
        let parsed: DecryptResponse<'_> = serde_json::from_slice(&response)
            .map_err(|_| self.unavailable("Decrypt: the answer is not KMS's JSON".to_owned()))?;
        // Decode into wiped buffers only. (A `Cow::Owned` arises only for a JSON-escaped
        // string, which base64 text never needs; it is wiped too.)
        let text: Zeroizing<Vec<u8>> = match parsed.plaintext {
            Cow::Borrowed(s) => Zeroizing::new(s.as_bytes().to_vec()),
            Cow::Owned(s) => Zeroizing::new(s.into_bytes()),
        };
        let mut scratch = Zeroizing::new([0u8; 48]);
        let n = B64
            .decode_slice(&text[..], &mut scratch[..])
            .map_err(|_| KeyError::Crypto(CryptoError::Format("KMS returned a malformed key")))?;
        let mut key = Zeroizing::new([0u8; 32]);
        match scratch.get(..n) {
            Some(bytes) if n == 32 => key.copy_from_slice(bytes),
            _ => {
                return Err(KeyError::Crypto(CryptoError::Format(
                    "KMS returned a key that is not 32 bytes",
                )))
            }
        }
        Ok(Dek::from_unwrapped(key))
    }
}

/// The encryption context of a wrap: the same fields as the associated data of a local wrap
/// ([`WrapContext::encode`]), as readable pairs. KMS binds them to the ciphertext, so a wrapped
/// DEK moved to another secret id or version, or relabelled with another KEK id, fails to
/// decrypt (`InvalidCiphertextException`). Readable rather than one opaque value so that
/// CloudTrail's `Decrypt` entries name the secret version, and a key policy can require
/// `kms:EncryptionContext:rcrt:purpose` = `rcrt/dek`. None of it is secret.
pub fn encryption_context(ctx: &WrapContext<'_>) -> BTreeMap<&'static str, String> {
    BTreeMap::from([
        ("rcrt:purpose", "rcrt/dek".to_owned()),
        ("rcrt:format", hex::encode(HEADER)),
        ("rcrt:kek-id", ctx.kek_id.as_str().to_owned()),
        ("rcrt:secret-id", hex::encode(ctx.secret_id)),
        ("rcrt:version", ctx.version.to_string()),
    ])
}

/// A response body, read into a buffer wiped on drop (grown by hand so that no unwiped copy of
/// a partial body is left behind).
async fn read_body(response: &mut reqwest::Response) -> Result<Zeroizing<Vec<u8>>, reqwest::Error> {
    let mut out = Zeroizing::new(Vec::with_capacity(
        response
            .content_length()
            .and_then(|n| usize::try_from(n).ok())
            .unwrap_or(1024)
            .min(64 * 1024),
    ));
    while let Some(chunk) = response.chunk().await? {
        if out.len() + chunk.len() > out.capacity() {
            let mut bigger = Zeroizing::new(Vec::with_capacity((out.len() + chunk.len()) * 2));
            bigger.extend_from_slice(&out);
            out = bigger;
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// Serializes a request that may hold key material into a buffer wiped on drop (sized up front
/// so it never reallocates and leaves a copy behind).
fn to_zeroizing_json<T: serde::Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, KeyError> {
    let mut buf = Zeroizing::new(Vec::with_capacity(4096));
    serde_json::to_writer(&mut *buf, value)
        .map_err(|e| KeyError::Config(format!("aws-kms: cannot encode the request: {e}")))?;
    Ok(buf)
}

#[derive(serde::Serialize)]
struct EncryptRequest<'a> {
    #[serde(rename = "KeyId")]
    key_id: &'a str,
    #[serde(rename = "Plaintext")]
    plaintext: &'a str,
    #[serde(rename = "EncryptionContext")]
    encryption_context: BTreeMap<&'static str, String>,
}

#[derive(Deserialize)]
struct EncryptResponse {
    #[serde(rename = "CiphertextBlob")]
    ciphertext_blob: String,
}

#[derive(serde::Serialize)]
struct DecryptRequest<'a> {
    #[serde(rename = "CiphertextBlob")]
    ciphertext_blob: String,
    #[serde(rename = "KeyId")]
    key_id: &'a str,
    #[serde(rename = "EncryptionContext")]
    encryption_context: BTreeMap<&'static str, String>,
}

#[derive(Deserialize)]
struct DecryptResponse<'a> {
    #[serde(rename = "Plaintext", borrow)]
    plaintext: Cow<'a, str>,
}

#[derive(Deserialize)]
struct DescribeKeyResponse {
    #[serde(rename = "KeyMetadata")]
    key_metadata: KeyMetadata,
}

#[derive(Debug, Deserialize)]
struct KeyMetadata {
    #[serde(rename = "Arn")]
    arn: String,
    #[serde(rename = "Enabled", default)]
    enabled: Option<bool>,
    #[serde(rename = "KeyState", default)]
    key_state: Option<String>,
    #[serde(rename = "KeySpec", default)]
    key_spec: Option<String>,
    #[serde(rename = "CustomerMasterKeySpec", default)]
    customer_master_key_spec: Option<String>,
    #[serde(rename = "KeyUsage", default)]
    key_usage: Option<String>,
}

/// Whether a key can wrap DEKs: enabled, `SYMMETRIC_DEFAULT`, `ENCRYPT_DECRYPT`. (moto leaves
/// `KeyUsage` out for such keys, so a missing one is taken as the default, `ENCRYPT_DECRYPT`.)
fn check_key_metadata(m: &KeyMetadata) -> Result<(), String> {
    if m.enabled == Some(false) || m.key_state.as_deref().is_some_and(|s| s != "Enabled") {
        return Err(format!(
            "the KMS key {} is not enabled (state {}): enable it, or point KEK_REF at an \
             enabled key",
            m.arn,
            m.key_state.as_deref().unwrap_or("disabled")
        ));
    }
    let spec = m
        .key_spec
        .as_deref()
        .or(m.customer_master_key_spec.as_deref());
    if spec != Some("SYMMETRIC_DEFAULT") {
        return Err(format!(
            "the KMS key {} has key spec {}; rcrt needs a SYMMETRIC_DEFAULT key",
            m.arn,
            spec.unwrap_or("(none)")
        ));
    }
    if let Some(usage) = m.key_usage.as_deref() {
        if usage != "ENCRYPT_DECRYPT" {
            return Err(format!(
                "the KMS key {} has key usage {usage}; rcrt needs ENCRYPT_DECRYPT",
                m.arn
            ));
        }
    }
    Ok(())
}

/// How a failed call is classified (the reason never quotes a request body).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Failure {
    /// Worth retrying: network, timeout, throttling, 5xx.
    Unavailable(String),
    /// Answered and refused: permissions, key state, bad request.
    Refused(String),
    /// KMS rejected the credentials (expired or unknown session token, unknown access key, bad
    /// signature): refused, but worth one retry if the shared credentials file has new ones.
    Credentials(String),
    /// KMS refused the ciphertext or its encryption context.
    Decrypt(String),
}

impl Failure {
    fn reason(&self) -> &str {
        match self {
            Self::Unavailable(r) | Self::Refused(r) | Self::Credentials(r) | Self::Decrypt(r) => r,
        }
    }

    fn into_reason(self) -> String {
        match self {
            Self::Unavailable(r) | Self::Refused(r) | Self::Credentials(r) | Self::Decrypt(r) => r,
        }
    }
}

/// Cuts a provider's message to [`MAX_REASON`] bytes.
fn bounded(mut reason: String) -> String {
    if reason.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !reason.is_char_boundary(cut) {
            cut -= 1;
        }
        reason.truncate(cut);
        reason.push('…');
    }
    reason
}

/// Classifies a KMS error answer by its error type (`__type` in the JSON body, or the
/// `x-amzn-ErrorType` header) and HTTP status.
fn classify_error(operation: &str, status: u16, type_header: Option<&str>, body: &[u8]) -> Failure {
    #[derive(Deserialize)]
    struct ErrorBody {
        #[serde(rename = "__type", default)]
        kind: Option<String>,
        #[serde(default, alias = "Message")]
        message: Option<String>,
    }
    let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
    let raw_type = parsed
        .as_ref()
        .and_then(|b| b.kind.clone())
        .or_else(|| type_header.map(str::to_owned))
        .unwrap_or_default();
    // `com.amazonaws.kms#NotFoundException`, or `NotFoundException:http://...` in the header.
    let kind = raw_type
        .rsplit('#')
        .next()
        .unwrap_or_default()
        .split(':')
        .next()
        .unwrap_or_default()
        .trim()
        .to_owned();
    let message = parsed.and_then(|b| b.message).unwrap_or_default();
    let reason = bounded(if kind.is_empty() {
        format!("{operation}: HTTP {status}")
    } else if message.is_empty() {
        format!("{operation}: {kind} (HTTP {status})")
    } else {
        format!("{operation}: {kind} (HTTP {status}): {message}")
    });
    if (300..400).contains(&status) {
        // The client follows no redirect: a request body carries a DEK.
        return Failure::Refused(format!(
            "{operation}: HTTP {status} redirect, not followed: AWS_ENDPOINT_URL_KMS / \
             AWS_ENDPOINT_URL must be the KMS endpoint itself"
        ));
    }
    match kind.as_str() {
        "InvalidCiphertextException" | "IncorrectKeyException" => Failure::Decrypt(reason),
        "ExpiredTokenException" | "UnrecognizedClientException" | "InvalidSignatureException" => {
            Failure::Credentials(reason)
        }
        "ThrottlingException"
        | "KeyUnavailableException"
        | "DependencyTimeoutException"
        | "KMSInternalException"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "ServiceUnavailableException"
        | "RequestTimeout"
        | "RequestTimeoutException" => Failure::Unavailable(reason),
        _ if status == 429 || status >= 500 => Failure::Unavailable(reason),
        // AccessDeniedException, DisabledException, KMSInvalidStateException,
        // NotFoundException, InvalidKeyUsageException, ValidationException and any other
        // 4xx: the provider answered; retrying will not help.
        _ => Failure::Refused(reason),
    }
}

/// Why a request got no answer (connect, timeout, reset), without the request.
fn transport_reason(operation: &str, endpoint: &url::Url, e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "cannot connect".to_owned()
    } else {
        // reqwest's message names the URL (no secret in it) and the cause.
        e.to_string()
    };
    format!("{operation} at {endpoint}: {what}")
}

/// `AWS_ENDPOINT_URL_KMS` / `AWS_ENDPOINT_URL` if set, else the region's public endpoint.
fn endpoint_for(configured: Option<&str>, region: &str) -> Result<url::Url, String> {
    service_endpoint(configured, "kms", region)
}

/// `AWS_ENDPOINT_URL_<SERVICE>` / `AWS_ENDPOINT_URL` if set (`configured`), else the region's
/// public endpoint of `service`: https, or http on a loopback host only.
fn service_endpoint(
    configured: Option<&str>,
    service: &str,
    region: &str,
) -> Result<url::Url, String> {
    let text = match configured.map(str::trim).filter(|s| !s.is_empty()) {
        Some(s) => s.to_owned(),
        None => format!("https://{service}.{region}.amazonaws.com/"),
    };
    let var = format!(
        "AWS_ENDPOINT_URL_{} or AWS_ENDPOINT_URL",
        service.to_ascii_uppercase()
    );
    let url = url::Url::parse(&text).map_err(|e| format!("{var} is not a URL ({e})"))?;
    // Before any message quotes the URL.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(format!("{var} must not carry a user name or password"));
    }
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(format!(
            "{var} {text:?} must be an http:// or https:// URL with a host"
        ));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(format!(
            "{var} {text:?} must be an https:// URL (http:// only on a loopback host: \
             127.0.0.1, ::1 or localhost)"
        ));
    }
    Ok(url)
}

/// Whether the URL's host is the local machine (127.0.0.0/8, ::1, localhost).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

/// The client for one endpoint: a per-request timeout, and no redirects (a request body holds
/// a DEK and the headers a session token: a 3xx must not send them to another host). No proxy
/// for a loopback endpoint.
fn http_client(timeout: Duration, endpoint: &url::Url) -> Result<reqwest::Client, String> {
    let mut builder = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none());
    if is_loopback(endpoint) {
        builder = builder.no_proxy();
    }
    builder
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))
}

/// The home directory, for the default `~/.aws/credentials` (the one variable this module
/// reads itself: the config module passes `AWS_SHARED_CREDENTIALS_FILE` when it is set).
fn home_dir() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The first two links of the chain, as [`static_chain`], or the "no credentials" error.
#[cfg(test)]
fn credentials_from_chain(
    settings: &AwsSettings,
    home: Option<&Path>,
) -> Result<(Credentials, Option<SharedFile>), String> {
    static_chain(settings, home)?.map_err(|why| no_credentials(&why))
}

/// The chain's links that need no network: environment keys first, then the shared
/// credentials file's profile (which is then returned too, to be read again when KMS rejects
/// the credentials). `Ok(Err(why))`: neither has credentials (go on down the chain); `Err`: a
/// set-up error (half a key pair, an unreadable file, a missing profile).
#[allow(clippy::type_complexity)]
fn static_chain(
    settings: &AwsSettings,
    home: Option<&Path>,
) -> Result<Result<(Credentials, Option<SharedFile>), String>, String> {
    let key_id = settings
        .access_key_id
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    let secret = settings
        .secret_access_key
        .as_ref()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty());
    match (key_id, secret) {
        (Some(id), Some(secret)) => {
            let token = settings
                .session_token
                .as_ref()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty());
            return Ok(Ok((
                Credentials::new(id, secret, token, None, "environment"),
                None,
            )));
        }
        (Some(_), None) => {
            return Err("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".to_owned())
        }
        (None, Some(_)) => {
            return Err("AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".to_owned())
        }
        (None, None) => {}
    }
    let profile = settings
        .profile
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .unwrap_or("default");
    let path = match (&settings.shared_credentials_file, home) {
        (Some(p), _) => p.clone(),
        (None, Some(h)) => h.join(".aws").join("credentials"),
        (None, None) => return Ok(Err("no HOME for ~/.aws/credentials".to_owned())),
    };
    // A file that does not exist is no link of the chain (as in the AWS SDKs), even when
    // named: the "no credentials" error names it if nothing further down has credentials.
    if !path.exists() {
        return Ok(Err(format!("{} does not exist", path.display())));
    }
    let file = SharedFile {
        path,
        profile: profile.to_owned(),
    };
    let credentials = read_shared_file(&file, true)?;
    Ok(Ok((credentials, Some(file))))
}

/// Credentials that expire and are fetched again: the chain's web identity and container links.
enum Refresher {
    /// STS `AssumeRoleWithWebIdentity` with the token in a file.
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
        sts: url::Url,
        http: reqwest::Client,
    },
    /// The ECS / EKS Pod Identity credentials endpoint.
    Container {
        url: url::Url,
        token: Option<Zeroizing<String>>,
        token_file: Option<PathBuf>,
        http: reqwest::Client,
    },
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::WebIdentity {
                token_file,
                role_arn,
                session_name,
                sts,
                ..
            } => f
                .debug_struct("WebIdentity")
                .field("token_file", token_file)
                .field("role_arn", role_arn)
                .field("session_name", session_name)
                .field("sts", &sts.as_str())
                .finish_non_exhaustive(),
            Self::Container {
                url,
                token,
                token_file,
                ..
            } => f
                .debug_struct("Container")
                .field("url", &url.as_str())
                .field("token", &token.as_ref().map(|_| "[REDACTED]"))
                .field("token_file", token_file)
                .finish_non_exhaustive(),
        }
    }
}

/// The chain's links after the shared credentials file: web identity if
/// `AWS_WEB_IDENTITY_TOKEN_FILE` is set, else container credentials if one of the
/// `AWS_CONTAINER_CREDENTIALS_*_URI` is; `None` if neither.
fn refresher_from_chain(
    settings: &AwsSettings,
    region: &str,
    timeout: Duration,
) -> Result<Option<Refresher>, String> {
    let nonempty = |s: &Option<String>| {
        s.as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
    };
    if let Some(token_file) = &settings.web_identity_token_file {
        let role_arn = nonempty(&settings.role_arn).ok_or(
            "AWS_WEB_IDENTITY_TOKEN_FILE is set but AWS_ROLE_ARN is not: web identity needs both",
        )?;
        let session_name = nonempty(&settings.role_session_name)
            .unwrap_or_else(|| DEFAULT_SESSION_NAME.to_owned());
        let sts = service_endpoint(settings.sts_endpoint_url.as_deref(), "sts", region)?;
        let http = http_client(timeout, &sts)?;
        return Ok(Some(Refresher::WebIdentity {
            token_file: token_file.clone(),
            role_arn,
            session_name,
            sts,
            http,
        }));
    }
    let Some(url) = container_url(
        nonempty(&settings.container_credentials_relative_uri).as_deref(),
        nonempty(&settings.container_credentials_full_uri).as_deref(),
    )?
    else {
        return Ok(None);
    };
    // Never through a proxy: the answer is a set of credentials, the request may carry a token.
    let http = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
    Ok(Some(Refresher::Container {
        url,
        token: settings
            .container_authorization_token
            .as_ref()
            .map(|t| Zeroizing::new(t.trim().to_owned()))
            .filter(|t| !t.is_empty()),
        token_file: settings.container_authorization_token_file.clone(),
        http,
    }))
}

/// The container credentials URL: `http://169.254.170.2` + the relative URI (which wins, as in
/// the AWS SDKs), else the full URI if it is https, or http on a loopback host or on one of
/// the documented agent hosts (169.254.170.2, 169.254.170.23, fd00:ec2::23).
fn container_url(relative: Option<&str>, full: Option<&str>) -> Result<Option<url::Url>, String> {
    if let Some(rel) = relative {
        let url = (rel.starts_with('/'))
            .then(|| url::Url::parse(&format!("http://{ECS_HOST}{rel}")).ok())
            .flatten()
            .filter(|u| u.host() == Some(url::Host::Ipv4(ECS_HOST)))
            .ok_or("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI must be a path starting with /")?;
        return Ok(Some(url));
    }
    let Some(full) = full else {
        return Ok(None);
    };
    let url = url::Url::parse(full)
        .map_err(|e| format!("AWS_CONTAINER_CREDENTIALS_FULL_URI is not a URL ({e})"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI must not carry a user name or password".to_owned(),
        );
    }
    let allowed = match url.scheme() {
        "https" => url.host().is_some(),
        "http" => {
            is_loopback(&url)
                || matches!(url.host(), Some(url::Host::Ipv4(ip)) if ip == ECS_HOST || ip == EKS_HOST_V4)
                || matches!(url.host(), Some(url::Host::Ipv6(ip)) if ip == EKS_HOST_V6)
        }
        _ => false,
    };
    if !allowed {
        return Err(format!(
            "AWS_CONTAINER_CREDENTIALS_FULL_URI (host {}) must be an https:// URL, or http:// on \
             a loopback host or on 169.254.170.2, 169.254.170.23 or [fd00:ec2::23]",
            url.host_str().unwrap_or("none")
        ));
    }
    Ok(Some(url))
}

/// Whether credentials should be fetched again: they expire in less than [`REFRESH_BEFORE`].
fn refresh_due(credentials: &Credentials, now: SystemTime) -> bool {
    credentials
        .expiry()
        .is_some_and(|e| e < now + REFRESH_BEFORE)
}

/// Reads a token from a file, trimmed, into a wiped buffer (never quoted in an error).
fn read_token_file(var: &str, path: &Path) -> Result<Zeroizing<String>, Failure> {
    let text = std::fs::read_to_string(path)
        .map(Zeroizing::new)
        .map_err(|e| Failure::Refused(format!("cannot read {var} {}: {e}", path.display())))?;
    let token = Zeroizing::new(text.trim().to_owned());
    if token.is_empty() {
        return Err(Failure::Refused(format!(
            "{var} {} is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// A credentials endpoint's failure: 5xx, 429 and throttling are worth retrying.
fn endpoint_failure(what: &str, status: u16, code: &str, message: &str) -> Failure {
    let reason = bounded(match (code.is_empty(), message.is_empty()) {
        (true, _) => format!("{what}: HTTP {status}"),
        (false, true) => format!("{what}: {code} (HTTP {status})"),
        (false, false) => format!("{what}: {code} (HTTP {status}): {message}"),
    });
    let retryable = status == 429
        || status >= 500
        || matches!(
            code,
            "Throttling" | "ThrottlingException" | "IDPCommunicationError" | "ServiceUnavailable"
        );
    if retryable {
        Failure::Unavailable(reason)
    } else {
        Failure::Refused(reason)
    }
}

impl Refresher {
    /// The chain link's name.
    fn source(&self) -> &'static str {
        match self {
            Self::WebIdentity { .. } => "web-identity",
            Self::Container { .. } => "container",
        }
    }

    /// One fetch of fresh credentials (one attempt; the guard retries the KMS call around it).
    async fn fetch(&self) -> Result<Credentials, Failure> {
        match self {
            Self::WebIdentity {
                token_file,
                role_arn,
                session_name,
                sts,
                http,
            } => {
                let what = format!("web identity: STS AssumeRoleWithWebIdentity at {sts}");
                let token = read_token_file("AWS_WEB_IDENTITY_TOKEN_FILE", token_file)?;
                // Sized up front so the form is never reallocated (a JWT needs no escaping
                // but `.`, which it does not contain; the margin covers the rest).
                let mut form = Zeroizing::new(String::with_capacity(
                    token.len() * 3 + role_arn.len() * 3 + session_name.len() * 3 + 128,
                ));
                url::form_urlencoded::Serializer::new(&mut *form)
                    .append_pair("Action", "AssumeRoleWithWebIdentity")
                    .append_pair("Version", "2011-06-15")
                    .append_pair("RoleArn", role_arn)
                    .append_pair("RoleSessionName", session_name)
                    .append_pair("WebIdentityToken", &token)
                    .finish();
                let body = Zeroizing::new(std::mem::take(&mut *form).into_bytes());
                let mut response = http
                    .post(sts.clone())
                    .header("content-type", "application/x-www-form-urlencoded")
                    .body(reqwest::Body::from(bytes::Bytes::from_owner(body)))
                    .send()
                    .await
                    .map_err(|e| {
                        Failure::Unavailable(transport_reason("AssumeRoleWithWebIdentity", sts, &e))
                    })?;
                let status = response.status().as_u16();
                let answer = read_body(&mut response).await.map_err(|e| {
                    Failure::Unavailable(transport_reason("AssumeRoleWithWebIdentity", sts, &e))
                })?;
                let text = std::str::from_utf8(&answer).unwrap_or_default();
                if !(200..300).contains(&status) {
                    return Err(endpoint_failure(
                        &what,
                        status,
                        xml_text(text, "Code").as_deref().map_or("", String::as_str),
                        xml_text(text, "Message")
                            .as_deref()
                            .map_or("", String::as_str),
                    ));
                }
                let field = |tag: &str| {
                    xml_text(text, tag)
                        .filter(|v| !v.is_empty())
                        .ok_or_else(|| {
                            Failure::Unavailable(format!("{what}: the answer has no {tag}"))
                        })
                };
                let key_id = field("AccessKeyId")?;
                let secret = field("SecretAccessKey")?;
                let session = field("SessionToken")?;
                let expiry = parse_expiration(&field("Expiration")?)
                    .ok_or_else(|| Failure::Unavailable(format!("{what}: bad Expiration")))?;
                Ok(Credentials::new(
                    key_id.as_str(),
                    secret.as_str(),
                    Some(session.as_str().to_owned()),
                    Some(expiry),
                    "web-identity",
                ))
            }
            Self::Container {
                url,
                token,
                token_file,
                http,
            } => {
                let what = format!(
                    "container credentials at {}",
                    url.host_str().unwrap_or_default()
                );
                let auth = match (token_file, token) {
                    (Some(file), _) => Some(read_token_file(
                        "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
                        file,
                    )?),
                    (None, Some(t)) => Some(t.clone()),
                    (None, None) => None,
                };
                let mut request = http.get(url.clone());
                if let Some(auth) = auth {
                    let mut value =
                        reqwest::header::HeaderValue::from_str(&auth).map_err(|_| {
                            Failure::Refused(format!(
                                "{what}: the authorization token is not a valid header value"
                            ))
                        })?;
                    value.set_sensitive(true);
                    request = request.header(reqwest::header::AUTHORIZATION, value);
                }
                let mut response = request
                    .send()
                    .await
                    .map_err(|e| Failure::Unavailable(transport_reason(&what, url, &e)))?;
                let status = response.status().as_u16();
                let answer = read_body(&mut response)
                    .await
                    .map_err(|e| Failure::Unavailable(transport_reason(&what, url, &e)))?;
                if !(200..300).contains(&status) {
                    #[derive(Deserialize)]
                    struct ErrorBody {
                        #[serde(default, alias = "Code")]
                        code: Option<String>,
                        #[serde(default, alias = "Message")]
                        message: Option<String>,
                    }
                    let e: Option<ErrorBody> = serde_json::from_slice(&answer).ok();
                    let (code, message) = e.map(|e| (e.code, e.message)).unwrap_or_default();
                    return Err(endpoint_failure(
                        &what,
                        status,
                        code.as_deref().unwrap_or_default(),
                        message.as_deref().unwrap_or_default(),
                    ));
                }
                let parsed: ContainerCredentials<'_> =
                    serde_json::from_slice(&answer).map_err(|_| {
                        Failure::Unavailable(format!(
                            "{what}: the answer is not AccessKeyId/SecretAccessKey JSON"
                        ))
                    })?;
                let expiry =
                    match parsed.expiration.as_deref() {
                        None => None,
                        Some(e) => Some(parse_expiration(e).ok_or_else(|| {
                            Failure::Unavailable(format!("{what}: bad Expiration"))
                        })?),
                    };
                let secret = Zeroizing::new(parsed.secret_access_key.into_owned());
                let token = parsed.token.map(Cow::into_owned).filter(|t| !t.is_empty());
                if parsed.access_key_id.is_empty() || secret.is_empty() {
                    return Err(Failure::Unavailable(format!(
                        "{what}: the answer has no AccessKeyId or SecretAccessKey"
                    )));
                }
                Ok(Credentials::new(
                    parsed.access_key_id.as_ref(),
                    secret.as_str(),
                    token,
                    expiry,
                    "container",
                ))
            }
        }
    }
}

/// The container endpoint's answer.
#[derive(Deserialize)]
struct ContainerCredentials<'a> {
    #[serde(rename = "AccessKeyId", borrow)]
    access_key_id: Cow<'a, str>,
    #[serde(rename = "SecretAccessKey", borrow)]
    secret_access_key: Cow<'a, str>,
    #[serde(rename = "Token", borrow, default)]
    token: Option<Cow<'a, str>>,
    #[serde(rename = "Expiration", borrow, default)]
    expiration: Option<Cow<'a, str>>,
}

/// An RFC 3339 time (`2026-12-01T05:06:59Z`, fractions allowed).
fn parse_expiration(text: &str) -> Option<SystemTime> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .ok()
        .map(SystemTime::from)
}

/// The text of the first `<tag>...</tag>` in an XML answer, unescaped, in a wiped buffer (a
/// tiny reader for STS's few flat fields; no attributes, no CDATA).
fn xml_text(xml: &str, tag: &str) -> Option<Zeroizing<String>> {
    let open = format!("<{tag}>");
    let close = format!("</{tag}>");
    let start = xml.find(&open)? + open.len();
    let rest = xml.get(start..)?;
    let raw = rest.get(..rest.find(&close)?)?.trim();
    let mut out = Zeroizing::new(String::with_capacity(raw.len()));
    let mut chars = raw.split('&');
    out.push_str(chars.next().unwrap_or_default());
    for piece in chars {
        let (entity, after) = piece.split_once(';')?;
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => return None,
        };
        out.push(c);
        out.push_str(after);
    }
    Some(out)
}

/// The credentials of a profile of the shared credentials file. A missing file is "no
/// credentials" unless it was named (`explicit`).
fn read_shared_file(file: &SharedFile, explicit: bool) -> Result<Credentials, String> {
    let path = &file.path;
    let profile = file.profile.as_str();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => Zeroizing::new(t),
        Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => {
            return Err(no_credentials(&format!(
                "{} does not exist",
                path.display()
            )));
        }
        Err(e) => {
            return Err(format!(
                "cannot read the AWS shared credentials file {}: {e}",
                path.display()
            ))
        }
    };
    profile_credentials(&text, profile).ok_or_else(|| {
        format!(
            "the AWS shared credentials file {} has no profile [{profile}] with \
             aws_access_key_id and aws_secret_access_key",
            path.display()
        )
    })
}

/// Whether two sets of credentials are the same keys and token.
fn same_credentials(a: &Credentials, b: &Credentials) -> bool {
    a.access_key_id() == b.access_key_id()
        && a.secret_access_key() == b.secret_access_key()
        && a.session_token() == b.session_token()
}

fn no_credentials(why: &str) -> String {
    format!(
        "no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or provide a \
         shared credentials file (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE) ({why}), web \
         identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN) or container credentials \
         (AWS_CONTAINER_CREDENTIALS_RELATIVE_URI or AWS_CONTAINER_CREDENTIALS_FULL_URI); \
         instance-metadata (IMDS), SSO and credential_process credentials are not supported"
    )
}

/// The credentials of `[profile]` in a shared credentials file (a small INI reader: sections,
/// `key = value`, `#` and `;` comments).
fn profile_credentials(text: &str, profile: &str) -> Option<Credentials> {
    let mut in_profile = false;
    let mut key_id: Option<&str> = None;
    let mut secret: Option<&str> = None;
    let mut token: Option<&str> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let section = section.trim();
            // `[profile name]` belongs to ~/.aws/config, but tolerate it here too.
            let name = section.strip_prefix("profile ").map_or(section, str::trim);
            in_profile = name == profile;
            continue;
        }
        if !in_profile {
            continue;
        }
        if let Some((k, v)) = line.split_once('=') {
            let v = v.trim();
            match k.trim().to_ascii_lowercase().as_str() {
                "aws_access_key_id" => key_id = Some(v),
                "aws_secret_access_key" => secret = Some(v),
                "aws_session_token" => token = Some(v),
                _ => {}
            }
        }
    }
    match (key_id, secret) {
        (Some(id), Some(secret)) if !id.is_empty() && !secret.is_empty() => Some(Credentials::new(
            id,
            secret,
            token.filter(|t| !t.is_empty()).map(str::to_owned),
            None,
            "shared-credentials-file",
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn class(status: u16, body: &str) -> &'static str {
        match classify_error("Decrypt", status, None, body.as_bytes()) {
            Failure::Unavailable(_) => "unavailable",
            Failure::Refused(_) => "refused",
            Failure::Credentials(_) => "credentials",
            Failure::Decrypt(_) => "decrypt",
        }
    }

    #[test]
    fn kms_error_bodies_are_classified() {
        // Bodies as KMS sends them (`__type` with and without the namespace, `message`).
        let cases = [
            (400, r#"{"__type":"InvalidCiphertextException"}"#, "decrypt"),
            (
                400,
                r#"{"__type":"com.amazonaws.kms#IncorrectKeyException","message":"The key ID in the request does not identify a KMS key that can perform this operation."}"#,
                "decrypt",
            ),
            (
                400,
                r#"{"__type":"AccessDeniedException","Message":"User is not authorized"}"#,
                "refused",
            ),
            (
                400,
                r#"{"__type":"DisabledException","message":"arn:aws:kms:us-east-1:123456789012:key/k is disabled."}"#,
                "refused",
            ),
            (
                400,
                r#"{"__type":"KMSInvalidStateException","message":"pending deletion"}"#,
                "refused",
            ),
            (
                400,
                r#"{"__type":"NotFoundException","message":"Key does not exist"}"#,
                "refused",
            ),
            (400, r#"{"__type":"InvalidKeyUsageException"}"#, "refused"),
            (
                400,
                r#"{"__type":"UnrecognizedClientException","message":"The security token included in the request is invalid."}"#,
                "credentials",
            ),
            (
                400,
                r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#,
                "credentials",
            ),
            (
                400,
                r#"{"__type":"InvalidSignatureException"}"#,
                "credentials",
            ),
            (307, "", "refused"),
            (308, "", "refused"),
            (
                400,
                r#"{"__type":"ThrottlingException","message":"Rate exceeded"}"#,
                "unavailable",
            ),
            (
                400,
                r#"{"__type":"KeyUnavailableException"}"#,
                "unavailable",
            ),
            (
                500,
                r#"{"__type":"DependencyTimeoutException"}"#,
                "unavailable",
            ),
            (500, r#"{"__type":"KMSInternalException"}"#, "unavailable"),
            (503, "<html>Service Unavailable</html>", "unavailable"),
            (502, "", "unavailable"),
            (429, "", "unavailable"),
            (403, "", "refused"),
        ];
        for (status, body, want) in cases {
            assert_eq!(class(status, body), want, "{status} {body}");
        }
    }

    #[test]
    fn error_type_header_is_used_when_the_body_has_none() {
        let f = classify_error(
            "Encrypt",
            400,
            Some("ThrottlingException:http://internal.amazon.com/coral/com.amazon.coral.availability/"),
            b"",
        );
        assert!(
            matches!(f, Failure::Unavailable(ref r) if r.contains("ThrottlingException")),
            "{f:?}"
        );
    }

    #[test]
    fn reasons_are_bounded_and_name_the_error() {
        let long = format!(
            r#"{{"__type":"AccessDeniedException","message":"{}"}}"#,
            "é".repeat(1000)
        );
        let Failure::Refused(reason) = classify_error("Encrypt", 400, None, long.as_bytes()) else {
            panic!("not refused");
        };
        assert!(reason.starts_with("Encrypt: AccessDeniedException (HTTP 400)"));
        assert!(reason.len() <= MAX_REASON + '…'.len_utf8());
    }

    #[test]
    fn shared_credentials_profiles() {
        let text = "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = s1\n\n[ci]\naws_access_key_id=AKIACI\naws_secret_access_key=s2\naws_session_token = tok\n[broken]\naws_access_key_id = X\n";
        let d = profile_credentials(text, "default").unwrap();
        assert_eq!(d.access_key_id(), "AKIADEFAULT");
        assert_eq!(d.secret_access_key(), "s1");
        assert_eq!(d.session_token(), None);
        let ci = profile_credentials(text, "ci").unwrap();
        assert_eq!(ci.access_key_id(), "AKIACI");
        assert_eq!(ci.session_token(), Some("tok"));
        assert!(profile_credentials(text, "broken").is_none());
        assert!(profile_credentials(text, "absent").is_none());
    }

    #[test]
    fn credential_chain_order_and_errors() {
        let dir = std::env::temp_dir().join(format!("rcrt-aws-creds-{}", std::process::id()));
        std::fs::create_dir_all(dir.join(".aws")).unwrap();
        let file = dir.join(".aws").join("credentials");
        std::fs::write(&file, "[default]\naws_access_key_id=FROMFILE\naws_secret_access_key=f\n[other]\naws_access_key_id=OTHER\naws_secret_access_key=o\n").unwrap();

        // Environment keys win over the file.
        let env = AwsSettings {
            access_key_id: Some("FROMENV".into()),
            secret_access_key: Some(Zeroizing::new("e".into())),
            ..Default::default()
        };
        assert_eq!(
            credentials_from_chain(&env, Some(&dir))
                .unwrap()
                .0
                .access_key_id(),
            "FROMENV"
        );

        // Half a pair is an error naming the missing variable, not a fall-through.
        let half = AwsSettings {
            access_key_id: Some("FROMENV".into()),
            ..Default::default()
        };
        let err = credentials_from_chain(&half, Some(&dir)).unwrap_err();
        assert!(err.contains("AWS_SECRET_ACCESS_KEY is not"), "{err}");

        // Default file under HOME, default profile; then AWS_PROFILE.
        let none = AwsSettings::default();
        assert_eq!(
            credentials_from_chain(&none, Some(&dir))
                .unwrap()
                .0
                .access_key_id(),
            "FROMFILE"
        );
        let other = AwsSettings {
            profile: Some("other".into()),
            ..Default::default()
        };
        assert_eq!(
            credentials_from_chain(&other, Some(&dir))
                .unwrap()
                .0
                .access_key_id(),
            "OTHER"
        );
        let missing_profile = AwsSettings {
            profile: Some("nope".into()),
            shared_credentials_file: Some(file.clone()),
            ..Default::default()
        };
        let err = credentials_from_chain(&missing_profile, None).unwrap_err();
        assert!(err.contains("[nope]"), "{err}");

        // No file anywhere: the error says what to set and what is not supported.
        let empty = dir.join("empty-home");
        let err = credentials_from_chain(&none, Some(&empty)).unwrap_err();
        assert!(
            err.contains("no AWS credentials") && err.contains("not supported"),
            "{err}"
        );
        // An explicit file that does not exist is named.
        let gone = AwsSettings {
            shared_credentials_file: Some(dir.join("gone")),
            ..Default::default()
        };
        let err = credentials_from_chain(&gone, None).unwrap_err();
        assert!(err.contains("gone"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn endpoints() {
        assert_eq!(
            endpoint_for(None, "eu-west-1").unwrap().as_str(),
            "https://kms.eu-west-1.amazonaws.com/"
        );
        assert_eq!(
            endpoint_for(Some("http://127.0.0.1:4566"), "us-east-1")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:4566/"
        );
        assert!(endpoint_for(Some("ftp://x"), "us-east-1").is_err());
        assert!(endpoint_for(Some("https://u:p@kms.example"), "us-east-1").is_err());
        // https, or http on a loopback host only.
        assert!(endpoint_for(Some("https://kms.example:8443"), "us-east-1").is_ok());
        for ok in [
            "http://localhost:4566",
            "http://[::1]:4566",
            "http://127.0.0.2",
        ] {
            assert!(endpoint_for(Some(ok), "us-east-1").is_ok(), "{ok}");
        }
        for bad in [
            "http://kms.example",
            "http://10.0.0.1:4566",
            "http://localhost.example",
            "http://[::2]",
        ] {
            let err = endpoint_for(Some(bad), "us-east-1").unwrap_err();
            assert!(
                err.contains("https://") && err.contains("loopback"),
                "{err}"
            );
        }
    }

    #[test]
    fn key_metadata_checks() {
        let ok: KeyMetadata = serde_json::from_str(
            r#"{"Arn":"arn:k","Enabled":true,"KeyState":"Enabled","KeySpec":"SYMMETRIC_DEFAULT","KeyUsage":"ENCRYPT_DECRYPT"}"#,
        )
        .unwrap();
        assert!(check_key_metadata(&ok).is_ok());
        let disabled: KeyMetadata = serde_json::from_str(
            r#"{"Arn":"arn:k","Enabled":false,"KeyState":"Disabled","KeySpec":"SYMMETRIC_DEFAULT"}"#,
        )
        .unwrap();
        assert!(check_key_metadata(&disabled)
            .unwrap_err()
            .contains("not enabled"));
        let pending: KeyMetadata = serde_json::from_str(
            r#"{"Arn":"arn:k","Enabled":true,"KeyState":"PendingDeletion","KeySpec":"SYMMETRIC_DEFAULT"}"#,
        )
        .unwrap();
        assert!(check_key_metadata(&pending)
            .unwrap_err()
            .contains("PendingDeletion"));
        let rsa: KeyMetadata = serde_json::from_str(
            r#"{"Arn":"arn:k","Enabled":true,"KeyState":"Enabled","KeySpec":"RSA_2048","KeyUsage":"ENCRYPT_DECRYPT"}"#,
        )
        .unwrap();
        assert!(check_key_metadata(&rsa).unwrap_err().contains("RSA_2048"));
        let hmac: KeyMetadata = serde_json::from_str(
            r#"{"Arn":"arn:k","Enabled":true,"CustomerMasterKeySpec":"SYMMETRIC_DEFAULT","KeyUsage":"GENERATE_VERIFY_MAC"}"#,
        )
        .unwrap();
        assert!(check_key_metadata(&hmac)
            .unwrap_err()
            .contains("GENERATE_VERIFY_MAC"));
    }

    #[test]
    fn encryption_context_names_the_row() {
        let kek = KekId::from_stored("aws-kms:0011223344556677");
        let id = [0xab; 16];
        let ctx = WrapContext {
            kek_id: &kek,
            secret_id: &id,
            version: 7,
        };
        let ec = encryption_context(&ctx);
        assert_eq!(ec["rcrt:purpose"], "rcrt/dek");
        assert_eq!(ec["rcrt:format"], "0120");
        assert_eq!(ec["rcrt:kek-id"], "aws-kms:0011223344556677");
        assert_eq!(ec["rcrt:secret-id"], "ab".repeat(16));
        assert_eq!(ec["rcrt:version"], "7");
    }

    /// A tiny HTTP/1.1 server on 127.0.0.1: answers each request with `respond(request head
    /// and body, lower-cased)`, closes the connection, and counts requests.
    async fn serve<F>(respond: F) -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>)
    where
        F: Fn(&str) -> String + Send + Sync + 'static,
    {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let count = std::sync::Arc::new(AtomicUsize::new(0));
        let counted = count.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut s, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head = loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break Some((String::from_utf8_lossy(&buf[..end]).to_lowercase(), end + 4));
                    }
                };
                let Some((head, body_at)) = head else {
                    continue;
                };
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < body_at + len {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                counted.fetch_add(1, Ordering::SeqCst);
                let body = String::from_utf8_lossy(buf.get(body_at..).unwrap_or_default());
                let answer = respond(&format!("{head}\r\n\r\n{}", body.to_lowercase()));
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            }
        });
        (port, count)
    }

    fn http_answer(status: &str, extra: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/x-amz-json-1.1\r\n{extra}\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// A backend on `http://127.0.0.1:port`, built as `connect` builds it but without the
    /// `DescribeKey`.
    fn test_kek(port: u16, credentials: Credentials, shared_file: Option<SharedFile>) -> AwsKmsKek {
        let endpoint =
            endpoint_for(Some(&format!("http://127.0.0.1:{port}")), "us-east-1").unwrap();
        let http = http_client(Duration::from_secs(5), &endpoint).unwrap();
        let arn = "arn:aws:kms:us-east-1:123456789012:key/test".to_owned();
        AwsKmsKek {
            id: remote_kek_id(ProviderKind::AwsKms, &arn),
            key_ref: arn.clone(),
            key_arn: arn,
            region: "us-east-1".into(),
            endpoint,
            credentials: RwLock::new(credentials),
            shared_file,
            refresher: None,
            refresh_lock: tokio::sync::Mutex::new(()),
            http,
        }
    }

    fn test_dek() -> Dek {
        Dek::from_unwrapped(Zeroizing::new([9u8; 32]))
    }

    #[tokio::test]
    async fn redirects_are_not_followed() {
        use std::sync::atomic::Ordering;
        // Where a redirect would lead: it must never see the request (the DEK, the token).
        let (target, reached) = serve(|_| {
            http_answer(
                "200 OK",
                "",
                r#"{"CiphertextBlob":"AAAA","KeyMetadata":{"Arn":"x"}}"#,
            )
        })
        .await;
        for code in ["307 Temporary Redirect", "308 Permanent Redirect"] {
            let location = format!("Location: http://127.0.0.1:{target}/\r\n");
            let (port, asked) = serve(move |_| http_answer(code, &location, "")).await;
            let kek = test_kek(
                port,
                Credentials::new("AKIATEST", "secret", Some("token".into()), None, "test"),
                None,
            );
            let id = kek.id.clone();
            let ctx = WrapContext {
                kek_id: &id,
                secret_id: &[1u8; 16],
                version: 1,
            };
            match kek.wrap(&test_dek(), &ctx).await {
                Err(KeyError::Refused { reason, .. }) => {
                    assert!(reason.contains("redirect"), "{reason}")
                }
                other => panic!(
                    "{code}: expected Refused, got {:?}",
                    other.map(|_| "a wrap")
                ),
            }
            assert_eq!(asked.load(Ordering::SeqCst), 1, "{code}");
        }
        assert_eq!(
            reached.load(Ordering::SeqCst),
            0,
            "a redirect was followed: the Encrypt body went to another host"
        );
    }

    #[tokio::test]
    async fn rejected_credentials_are_read_again_from_the_shared_file() {
        use std::sync::atomic::Ordering;
        let dir = std::env::temp_dir().join(format!("rcrt-aws-reload-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("credentials");
        let write = |token: &str| {
            std::fs::write(
                &path,
                format!(
                    "[ci]\naws_access_key_id=AKIATEST\naws_secret_access_key=s\naws_session_token={token}\n"
                ),
            )
            .unwrap();
        };
        write("old-token");
        let settings = AwsSettings {
            shared_credentials_file: Some(path.clone()),
            profile: Some("ci".into()),
            ..Default::default()
        };
        let (credentials, shared_file) = credentials_from_chain(&settings, None).unwrap();
        assert_eq!(credentials.session_token(), Some("old-token"));

        // A KMS that takes only the renewed token.
        let blob = B64.encode([0x5au8; 40]);
        let (port, asked) = serve(move |head| {
            if head.contains("x-amz-security-token: new-token") {
                http_answer("200 OK", "", &format!(r#"{{"CiphertextBlob":"{blob}"}}"#))
            } else {
                http_answer(
                    "400 Bad Request",
                    "",
                    r#"{"__type":"ExpiredTokenException","message":"The security token included in the request is expired"}"#,
                )
            }
        })
        .await;
        let kek = test_kek(port, credentials, shared_file);
        let id = kek.id.clone();
        let ctx = WrapContext {
            kek_id: &id,
            secret_id: &[1u8; 16],
            version: 1,
        };

        // The file still holds the expired token: refused after one request, no retry.
        match kek.wrap(&test_dek(), &ctx).await {
            Err(KeyError::Refused { reason, .. }) => {
                assert!(reason.contains("ExpiredTokenException"), "{reason}")
            }
            other => panic!("expected Refused, got {:?}", other.map(|_| "a wrap")),
        }
        assert_eq!(asked.load(Ordering::SeqCst), 1);

        // Renewed in the file: calls rejected with the old token are repeated once with the new
        // one and succeed, including a concurrent call that finds the reload already done.
        write("new-token");
        let (dek_a, dek_b) = (test_dek(), test_dek());
        let (a, b) = tokio::join!(kek.wrap(&dek_a, &ctx), kek.wrap(&dek_b, &ctx));
        assert_eq!(&a.unwrap().as_bytes()[2..], &[0x5au8; 40]);
        b.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 5);
        // The new credentials stay in use: one request.
        kek.wrap(&test_dek(), &ctx).await.unwrap();
        assert_eq!(asked.load(Ordering::SeqCst), 6);

        // Credentials from the environment are never read again: one request, refused.
        let (env_creds, none) = credentials_from_chain(
            &AwsSettings {
                access_key_id: Some("AKIATEST".into()),
                secret_access_key: Some(Zeroizing::new("s".into())),
                session_token: Some(Zeroizing::new("old-token".into())),
                ..settings.clone()
            },
            None,
        )
        .unwrap();
        assert!(none.is_none());
        let env_kek = test_kek(port, env_creds, None);
        assert!(matches!(
            env_kek.wrap(&test_dek(), &ctx).await,
            Err(KeyError::Refused { .. })
        ));
        assert_eq!(asked.load(Ordering::SeqCst), 7);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refresh_is_due_when_less_than_five_minutes_are_left() {
        let now = SystemTime::now();
        let with = |left: Option<Duration>| {
            Credentials::new("A", "s", Some("t".into()), left.map(|l| now + l), "test")
        };
        assert!(refresh_due(&with(Some(Duration::from_secs(60))), now));
        assert!(refresh_due(&with(Some(Duration::from_secs(299))), now));
        assert!(!refresh_due(&with(Some(Duration::from_secs(301))), now));
        assert!(!refresh_due(&with(Some(Duration::from_secs(3600))), now));
        assert!(!refresh_due(&with(None), now));
        // Already expired.
        let old = Credentials::new("A", "s", None, Some(now - Duration::from_secs(1)), "test");
        assert!(refresh_due(&old, now));
    }

    #[test]
    fn sts_answers_and_expirations_are_parsed() {
        let xml =
            "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
            <AccessKeyId>ASIAX</AccessKeyId><SecretAccessKey>a/b+c&amp;d</SecretAccessKey>\
            <SessionToken> tok </SessionToken><Expiration>2026-12-01T05:06:59.014281Z</Expiration>\
            </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>";
        assert_eq!(xml_text(xml, "AccessKeyId").unwrap().as_str(), "ASIAX");
        assert_eq!(
            xml_text(xml, "SecretAccessKey").unwrap().as_str(),
            "a/b+c&d"
        );
        assert_eq!(xml_text(xml, "SessionToken").unwrap().as_str(), "tok");
        assert!(xml_text(xml, "Missing").is_none());
        assert!(xml_text("<A>x&bogus;</A>", "A").is_none());
        let e = parse_expiration(&xml_text(xml, "Expiration").unwrap()).unwrap();
        let t = time::OffsetDateTime::from(e);
        assert_eq!(
            (t.year(), t.hour(), t.minute(), t.second()),
            (2026, 5, 6, 59)
        );
        assert!(parse_expiration("2026-12-01T05:06:59+01:00").is_some());
        assert!(parse_expiration("tomorrow").is_none());
    }

    #[test]
    fn container_urls() {
        assert_eq!(
            container_url(Some("/v2/credentials/abc"), Some("http://127.0.0.1:1/x"))
                .unwrap()
                .unwrap()
                .as_str(),
            "http://169.254.170.2/v2/credentials/abc"
        );
        assert!(container_url(Some("v2/x"), None).is_err());
        assert!(container_url(Some("@evil.example/x"), None).is_err());
        assert!(container_url(None, None).unwrap().is_none());
        for ok in [
            "http://127.0.0.1:8080/creds",
            "http://localhost/creds",
            "http://[::1]:9/creds",
            "http://169.254.170.2/v1/credentials",
            "http://169.254.170.23/v1/credentials",
            "http://[fd00:ec2::23]/v1/credentials",
            "https://creds.example/get",
        ] {
            assert!(container_url(None, Some(ok)).unwrap().is_some(), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/creds",
            "http://169.254.169.254/latest/meta-data",
            "http://creds.example/get",
            "ftp://127.0.0.1/x",
            "https://user:pass@creds.example/get",
        ] {
            let err = container_url(None, Some(bad)).unwrap_err();
            assert!(!err.contains("pass@"), "{err}");
        }
    }

    #[test]
    fn chain_falls_through_to_web_identity_and_container() {
        let dir = std::env::temp_dir().join(format!("rcrt-aws-chain-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let t = Duration::from_secs(5);
        // A named shared file that does not exist is no link: the error names it.
        let base = AwsSettings {
            shared_credentials_file: Some(dir.join("absent")),
            ..Default::default()
        };
        assert!(static_chain(&base, None).unwrap().is_err());
        assert!(refresher_from_chain(&base, "us-east-1", t)
            .unwrap()
            .is_none());
        // Web identity needs the role too.
        let half = AwsSettings {
            web_identity_token_file: Some(dir.join("token")),
            ..base.clone()
        };
        let err = refresher_from_chain(&half, "us-east-1", t).unwrap_err();
        assert!(err.contains("AWS_ROLE_ARN"), "{err}");
        let web = AwsSettings {
            role_arn: Some("arn:aws:iam::123456789012:role/r".into()),
            container_credentials_full_uri: Some("http://127.0.0.1:1/c".into()),
            ..half
        };
        let r = refresher_from_chain(&web, "eu-west-1", t).unwrap().unwrap();
        assert_eq!(r.source(), "web-identity");
        let Refresher::WebIdentity {
            sts, session_name, ..
        } = &r
        else {
            panic!("not web identity")
        };
        assert_eq!(sts.as_str(), "https://sts.eu-west-1.amazonaws.com/");
        assert_eq!(session_name, "rcrt-server");
        // Container credentials; the token never shows in Debug.
        let container = AwsSettings {
            container_credentials_full_uri: Some("http://127.0.0.1:1/c".into()),
            container_authorization_token: Some(Zeroizing::new("very-secret-token".into())),
            ..base
        };
        let r = refresher_from_chain(&container, "us-east-1", t)
            .unwrap()
            .unwrap();
        assert_eq!(r.source(), "container");
        assert!(!format!("{r:?}").contains("very-secret-token"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn web_identity_credentials_are_fetched_again_before_they_expire() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = std::env::temp_dir().join(format!("rcrt-aws-webid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let token_file = dir.join("token");
        std::fs::write(&token_file, "jwt-one\n").unwrap();

        // An STS stand-in: answer n carries session token session-n; the first expires in 2
        // minutes (inside the 5-minute margin), later ones in an hour. It records the web
        // identity token each request carried.
        let seen = Arc::new(RwLock::new(Vec::<String>::new()));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (seen_in, fetches_in) = (seen.clone(), fetches.clone());
        let (sts_port, _) = serve(move |request| {
            let n = fetches_in.fetch_add(1, Ordering::SeqCst) + 1;
            let token = request
                .split("webidentitytoken=")
                .nth(1)
                .unwrap_or_default()
                .split('&')
                .next()
                .unwrap_or_default()
                .to_owned();
            seen_in.write().unwrap().push(token);
            assert!(request.contains("action=assumerolewithwebidentity"), "{request}");
            assert!(request.contains("rolesessionname=rcrt-server"), "{request}");
            let left = if n == 1 { 120 } else { 3600 };
            let expires = (time::OffsetDateTime::now_utc() + Duration::from_secs(left))
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap();
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nConnection: close\r\n\r\n\
                 <AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials>\
                 <AccessKeyId>ASIA{n}</AccessKeyId><SecretAccessKey>s{n}</SecretAccessKey>\
                 <SessionToken>session-{n}</SessionToken><Expiration>{expires}</Expiration>\
                 </Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>"
            )
        })
        .await;
        // A KMS stand-in that takes only the second session.
        let blob = B64.encode([0x33u8; 40]);
        let (kms_port, kms_asked) = serve(move |head| {
            if head.contains("x-amz-security-token: session-2") {
                http_answer("200 OK", "", &format!(r#"{{"CiphertextBlob":"{blob}"}}"#))
            } else {
                http_answer(
                    "400 Bad Request",
                    "",
                    r#"{"__type":"ExpiredTokenException","message":"expired"}"#,
                )
            }
        })
        .await;
        let settings = AwsSettings {
            web_identity_token_file: Some(token_file.clone()),
            role_arn: Some("arn:aws:iam::123456789012:role/rcrt".into()),
            sts_endpoint_url: Some(format!("http://127.0.0.1:{sts_port}")),
            ..Default::default()
        };
        let refresher = refresher_from_chain(&settings, "us-east-1", Duration::from_secs(5))
            .unwrap()
            .unwrap();
        let first = refresher.fetch().await.unwrap();
        assert_eq!(first.session_token(), Some("session-1"));
        assert!(refresh_due(&first, SystemTime::now()));
        let mut kek = test_kek(kms_port, first, None);
        kek.refresher = Some(refresher);
        assert_eq!(kek.credential_source(), "web-identity");
        let id = kek.id.clone();
        let ctx = WrapContext {
            kek_id: &id,
            secret_id: &[1u8; 16],
            version: 1,
        };

        // Kubernetes rotated the token file: the next fetch sends the new token.
        std::fs::write(&token_file, "jwt-two\n").unwrap();
        // Near expiry: fetched again before the call, which then goes out with session-2.
        let wrapped = kek.wrap(&test_dek(), &ctx).await.unwrap();
        assert_eq!(&wrapped.as_bytes()[2..], &[0x33u8; 40]);
        assert_eq!(fetches.load(Ordering::SeqCst), 2);
        assert_eq!(kms_asked.load(Ordering::SeqCst), 1);
        assert_eq!(*seen.read().unwrap(), ["jwt-one", "jwt-two"]);
        // An hour left: no fetch.
        kek.wrap(&test_dek(), &ctx).await.unwrap();
        assert_eq!(fetches.load(Ordering::SeqCst), 2);

        // The token file gone while the credentials are still good: they stay in use.
        std::fs::remove_file(&token_file).unwrap();
        *kek.credentials.write().unwrap() = Credentials::new(
            "ASIA2",
            "s2",
            Some("session-2".into()),
            Some(SystemTime::now() + Duration::from_secs(60)),
            "test",
        );
        kek.wrap(&test_dek(), &ctx).await.unwrap();
        // Expired and no way to renew: refused, naming the file, never a token.
        *kek.credentials.write().unwrap() = Credentials::new(
            "ASIA2",
            "s2",
            Some("session-2".into()),
            Some(SystemTime::now() - Duration::from_secs(1)),
            "test",
        );
        match kek.wrap(&test_dek(), &ctx).await {
            Err(KeyError::Refused { reason, .. }) => {
                assert!(reason.contains("AWS_WEB_IDENTITY_TOKEN_FILE"), "{reason}");
                assert!(
                    !reason.contains("jwt") && !reason.contains("session-"),
                    "{reason}"
                );
            }
            other => panic!("expected Refused, got {:?}", other.map(|_| "a wrap")),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
