//! What the integration tests share: running `vine` with the caller's environment kept out
//! ([`command`]), a `vine serve` process ([`server`]), a board in a temporary directory
//! ([`board`]), reading board files ([`files`]), finding processes ([`procs`]) and plain HTTP
//! requests to the control room ([`http`]) and a throwaway PostgreSQL cluster ([`pg`]).
//!
//! Each test binary includes it with `mod support;` and uses what it needs; a helper one
//! binary leaves unused is no warning there.

#![allow(dead_code)]

pub mod board;
pub mod command;
pub mod files;
pub mod http;
pub mod pg;
pub mod procs;
pub mod server;

#[allow(unused_imports)]
pub use {board::*, command::*, files::*, http::*, procs::*, server::*};
