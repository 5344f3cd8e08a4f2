//! Azure Key Vault / Managed HSM: wrapKey and unwrapKey.

use async_trait::async_trait;
use rcrt_crypto::{Dek, KekId, WrapContext, WrappedDek};

use crate::settings::{AzureSettings, CallSettings};
use crate::{KekBackend, KeyError, ProviderKind};

/// A KEK in Azure Key Vault.
pub struct AzureKek {
    id: KekId,
}

impl AzureKek {
    /// Connects and checks that the key exists and can be used.
    pub async fn connect(key_name: &str, settings: &AzureSettings, call: &CallSettings) -> Result<Self, KeyError> {
        let _ = (key_name, settings, call);
        Err(KeyError::Config("the azure-keyvault provider is not built yet".into()))
    }
}

#[async_trait]
impl KekBackend for AzureKek {
    fn id(&self) -> &KekId {
        &self.id
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::AzureKeyVault
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
