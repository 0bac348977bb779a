//! The distribution API client: registry names and transport, authentication
//! (anonymous, Basic, the Bearer token challenge), manifests, blobs, ranged reads,
//! uploads, cross-repository mounts, tag lists and referrers; and [`RegistrySource`],
//! the registry as an [`crate::image::ImageSource`].
//!
//! Owns: every byte that crosses the network to a registry, and the one-line errors
//! that name the registry, the object and the problem. Must not touch: the store,
//! files other than credential and CA files, the terminal. It hands out bytes
//! unverified except where the protocol itself promises a digest (a manifest asked
//! for by digest, `Docker-Content-Digest`); callers hash blobs themselves.
//!
//! It is blocking (ureq over rustls, no gzip or brotli decoding, redirects followed
//! here so that `Authorization` never reaches another host) because the store and
//! the daemon are synchronous; a pull runs several blobs on threads sharing one
//! [`Client`].

mod auth;
mod client;
mod error;
mod name;
mod source;

#[cfg(test)]
mod tests;

pub use auth::Credentials;
pub(crate) use client::referrers_tag;
pub use client::{Client, FetchedManifest, MountOutcome, Options};
pub use error::{ErrorKind, RemoteError};
pub(crate) use name::registry_host;
pub use source::RegistrySource;
