//! The activator's pure state machine, [`PoolState`], lives in the
//! `stratus-scaling` crate so that the cluster simulator drives the same
//! code; this module re-exports it under its old path.

pub use stratus_scaling::pool::*;
