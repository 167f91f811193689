//! The agent API against real process instances (a small Python server).

mod api;
mod big;
mod items;
mod mapped;
mod part;
mod spread;
mod whole;
