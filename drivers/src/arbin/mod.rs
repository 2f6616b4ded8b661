//! Arbin cyclers through CTI, the Console TCP Interface of MITS Pro (facts:
//! `shared/devices/arbin-cti.md`).
//!
//! - [`wire`]: frames, one encoder and decoder per message, status and result-code tables.
pub mod wire;
