//! dochash: local semantic search over a person's own documents.
//!
//! Data flows one way: [`corpus`] (files → passages) → [`encoder`] (passages → vectors) →
//! `train` (learned encoder and hash head) → [`index`] (codes, store, search) → the binaries.

pub mod app;
pub mod corpus;
pub mod encoder;
pub mod failpoint;
pub mod fsx;
pub mod index;
pub mod model;
pub mod pathwire;
pub mod priority;
pub mod rng;
pub mod train;
