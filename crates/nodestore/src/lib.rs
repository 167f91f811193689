//! The node data store: a workflow's intermediate items as files, in a
//! memory tier (a tmpfs directory with a byte budget) that spills to a
//! local-disk directory, keyed by invocation, freed when the invocation
//! ends or when its time to live passes; and the by-reference contract
//! ([`wire`]) that lets co-located functions read their inputs and write
//! their outputs as files instead of HTTP bodies.
//!
//! [`ledger`] is the pure accounting core (time is an argument);
//! [`store`] and [`session`] are the thin IO layer; [`fsio`] holds the file
//! operations that can fail for lack of room, with a fault-injecting double;
//! [`remote`] is the wire for items kept on the worker that produced them;
//! [`gather`] joins a body's pieces as they arrive.

pub mod fsio;
pub mod gather;
pub mod ledger;
pub mod remote;
pub mod session;
pub mod store;
pub mod wire;

pub use fsio::{Backend, FaultyBackend, FsBackend};
pub use gather::Gather;
pub use ledger::{Budget, ItemId, Ledger, LedgerError, Tier};
pub use session::Session;
pub use store::{Counts, Item, Store, StoreConfig, StoreError, Writing};
