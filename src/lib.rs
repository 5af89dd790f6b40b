//! Aqueduct: a peer-to-peer, CRDT-replicated control plane for HAProxy.
//!
//! The deterministic core — [`crdt`] (the replicated document), [`gossip`]
//! (the protocol as a pure state machine) and [`haproxy::render`] (the
//! configuration text and the runtime-or-reload plan) — never touches the
//! network, disk, clock, environment or OS randomness. The I/O shell lives
//! behind the `shell` feature. See ARCHITECTURE.md for the map.

pub mod crdt;
pub mod gossip;
pub mod haproxy;

#[cfg(feature = "shell")]
pub mod activity;
#[cfg(feature = "shell")]
pub mod api;
#[cfg(feature = "shell")]
pub mod bench;
#[cfg(feature = "shell")]
pub mod certs;
#[cfg(feature = "shell")]
pub mod client;
#[cfg(feature = "shell")]
pub mod config;
#[cfg(feature = "shell")]
pub mod ctl;
#[cfg(feature = "shell")]
pub mod daemon;
#[cfg(feature = "shell")]
pub mod demo;
#[cfg(feature = "shell")]
pub mod echo;
#[cfg(feature = "shell")]
pub mod files;
#[cfg(feature = "shell")]
pub mod local_mesh;
#[cfg(feature = "shell")]
pub mod peer;
#[cfg(feature = "shell")]
pub mod register;
#[cfg(feature = "shell")]
pub mod store;
#[cfg(feature = "shell")]
pub mod tls_reload;
#[cfg(feature = "shell")]
pub mod transport;
