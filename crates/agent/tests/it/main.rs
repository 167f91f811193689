//! The agent API against real process instances (a small Python server).

mod api;
mod items;
mod part;
