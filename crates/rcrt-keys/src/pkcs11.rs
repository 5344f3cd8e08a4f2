//! PKCS#11: a non-extractable AES-256 key on a token (an HSM, SoftHSM2).

use async_trait::async_trait;
use rcrt_crypto::{Dek, KekId, WrapContext, WrappedDek};

use crate::settings::Pkcs11Settings;
use crate::{KekBackend, KeyError, ProviderKind};

/// A KEK on a PKCS#11 token.
pub struct Pkcs11Kek {
    id: KekId,
}

impl Pkcs11Kek {
    /// Connects and checks that the key exists and can be used.
    pub async fn connect(label: &str, settings: &Pkcs11Settings) -> Result<Self, KeyError> {
        let _ = (label, settings);
        Err(KeyError::Config("the pkcs11 provider is not built yet".into()))
    }
}

#[async_trait]
impl KekBackend for Pkcs11Kek {
    fn id(&self) -> &KekId {
        &self.id
    }

    fn provider(&self) -> ProviderKind {
        ProviderKind::Pkcs11
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
