//! AWS KMS: Encrypt/Decrypt with the associated data as the encryption context.

use async_trait::async_trait;
use rcrt_crypto::{Dek, KekId, WrapContext, WrappedDek};

use crate::settings::{AwsSettings, CallSettings};
use crate::{KekBackend, KeyError, ProviderKind};

/// A KEK in AWS KMS.
pub struct AwsKmsKek {
    id: KekId,
}

impl AwsKmsKek {
    /// Connects and checks that the key exists and can be used.
    pub async fn connect(key_ref: &str, settings: &AwsSettings, call: &CallSettings) -> Result<Self, KeyError> {
        let _ = (key_ref, settings, call);
        Err(KeyError::Config("the aws-kms provider is not built yet".into()))
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
        String::new()
    }

    async fn wrap(&self, _dek: &Dek, _ctx: &WrapContext<'_>) -> Result<WrappedDek, KeyError> {
        Err(KeyError::UnknownKek(self.id.clone()))
    }

    async fn unwrap(&self, _w: &WrappedDek, _ctx: &WrapContext<'_>) -> Result<Dek, KeyError> {
        Err(KeyError::UnknownKek(self.id.clone()))
    }
}
