//! The `ultragate` binary's library part: the configuration file
//! ([`config`]), the CPUs the container gives ([`cpus`]) and server names
//! to addresses ([`resolve`]), shared by the binary and by the fuzzer that
//! feeds the loader arbitrary TOML. Start-up, signals and driver selection live in
//! the binary (`main.rs`).

pub mod config;
pub mod cpus;
pub mod files;
pub mod netstatus;
pub mod resolve;
