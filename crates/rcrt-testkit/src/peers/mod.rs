//! Real KEK provider peers for tests (SoftHSM2, moto_server, OpenBao) and the Azure Key Vault
//! stand-in, each started on loopback by the test that needs it and stopped on drop.

pub mod azure_standin;
pub mod moto;
pub mod openbao;
pub mod softhsm;
