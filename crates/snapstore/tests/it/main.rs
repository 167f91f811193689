//! Integration tests of the chunk store: real files, a real S3 server
//! process (s3s-fs), real HTTP between the RCSS server and its client.

mod cache;
mod cli;
mod s3;
mod server;
mod store;
mod support;
