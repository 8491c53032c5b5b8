//! Domains: a name the Cloud Controller keeps fresh with a TTL. While a domain is fresh the
//! converger may retire extra instances of its LRPs; when it lapses it stops retiring.

use serde::{Deserialize, Serialize};

/// A fresh domain and how long it stays fresh (`ttl` 0: forever).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default)]
pub struct Domain {
    pub domain: String,
    pub ttl: u32,
}
