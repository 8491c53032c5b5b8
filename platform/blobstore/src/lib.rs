//! The blob store: app bits, droplets, buildpacks and lifecycles over HTTP, on local disk.
//!
//! A [`BlobStore`] keeps blobs under a directory, each written atomically (streamed to a temp
//! file, fsynced, renamed into place) with its sha256 recorded alongside its bytes; its
//! [`BlobStore::router`] serves them, and a [`BlobClient`] talks to it (cells download from
//! [`BlobClient::url`]).
//!
//! Routes:
//! - `PUT|POST /v1/blobs/{*key}[?sha256=HEX]` — raw body; 201 [`BlobInfo`]; 400 bad key,
//!   409 key clashes with a directory, 413 too large, 422 digest mismatch, 507 disk nearly full.
//! - `GET|HEAD /v1/blobs/{*key}` — the bytes, with `Content-Length`, `ETag: "<sha256>"` and
//!   `X-Blob-Sha256`; 404 when missing.
//! - `DELETE /v1/blobs/{*key}` — 204, or 404.
//! - `GET /v1/blobs?prefix=P` — JSON array of [`BlobInfo`], sorted by key.
//! - `DELETE /v1/blobs?prefix=P` — deletes every blob under `P`; `{"deleted": N}`.

mod client;
mod error;
mod file;
mod key;
mod server;
mod store;

pub use client::BlobClient;
pub use error::BlobError;
pub use key::{MAX_KEY_BYTES, MAX_SEGMENTS, validate_key, validate_prefix};
pub use store::{BlobInfo, BlobStore, BlobStoreConfig};

/// The header carrying a blob's sha256 in `GET`/`HEAD` replies (also its `ETag`, quoted).
pub const SHA256_HEADER: &str = "x-blob-sha256";
