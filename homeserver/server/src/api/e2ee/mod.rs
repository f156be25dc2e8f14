//! End-to-end encryption endpoints. The server never decrypts: it stores and routes device
//! keys, one-time and fallback keys, cross-signing keys and signatures, key backups, device
//! list changes and to-device messages, locally and over federation. The tables and the locks
//! are the service's (`crate::service::e2ee`); these modules read requests, make the Matrix
//! decisions and build responses.

pub mod backup;
pub mod cross_signing;
pub mod device_keys;
pub mod device_lists;
pub mod federation;
pub mod query;
pub mod to_device;
