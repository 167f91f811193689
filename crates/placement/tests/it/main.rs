//! Integration tests of the placement core through its public API.

mod props;
mod workflow;
mod workflow_props;
