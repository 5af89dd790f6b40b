//! The REST API (axum): the Thalassa-compatible surface of API.md plus the
//! mesh additions. Owns DTOs and their mapping to `crdt::model`; must not
//! hold protocol logic or expose CRDT internals.
//!
//! Not built yet: this module is the home of issue 3 (the peer daemon).
