//! HashiCorp Vault / OpenBao: Transit (the key stays in Vault) and KV (the guide's flow).

use async_trait::async_trait;
use rcrt_crypto::{Dek, KekId, WrapContext, WrappedDek};

use crate::settings::{CallSettings, VaultSettings};
use crate::{KekBackend, KeyError, ProviderKind};

/// A KEK in Vault Transit.
pub struct TransitKek {
    id: KekId,
}

impl TransitKek {
    /// Connects and checks that the key exists and can be used.
    pub async fn connect(key_name: &str, settings: &VaultSettings, call: &CallSettings) -> Result<Self, KeyError> {
        let _ = (key_name, settings, call);
        Err(KeyError::Config("the vault-transit provider is not built yet".into()))
    }
}

#[async_trait]
impl KekBackend for TransitKek {
    fn id(&self) -> &KekId {
        &self.id
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::VaultTransit
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

/// Reads the KEK from a KV path once (`KEK_PROVIDER=vault-kv`).
pub async fn read_kv_kek(
    path: &str,
    settings: &VaultSettings,
    call: &CallSettings,
) -> Result<rcrt_crypto::Kek, KeyError> {
    let _ = (path, settings, call);
    Err(KeyError::Config("the vault-kv provider is not built yet".into()))
}
