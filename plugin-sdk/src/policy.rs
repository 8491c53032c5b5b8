//! Auction policies on plain Rust data.

use diego_auction_scoring as s;

/// What `describe` reports: shown by the host in logs and in the registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
    pub description: String,
}

impl PolicyInfo {
    pub fn new(name: &str, version: &str, description: &str) -> Self {
        PolicyInfo {
            name: name.to_owned(),
            version: version.to_owned(),
            description: description.to_owned(),
        }
    }
}

/// An auction policy. Both functions are pure: the host gives a fresh instance per batch, so
/// nothing survives between calls, and it re-checks every placement you return.
pub trait Policy {
    fn info() -> PolicyInfo;

    /// One outcome per `batch.works` item, in that order. Account for the capacity your own
    /// earlier placements use (see `diego_auction_scoring::place` for the reference loop).
    fn place(batch: &s::Batch) -> Vec<s::Outcome>;

    /// The batch as it crossed the boundary (layout: `diego_auction_scoring::wire`). The
    /// default decodes it and calls [`Policy::place`]; override it to read the bytes in place
    /// (the shipped policies call `diego_auction_scoring::wire::place`, which skips building
    /// the decoded copy). An error becomes a guest panic, which the host reports as a fault.
    fn place_bytes(batch: &[u8]) -> Result<Vec<s::Outcome>, s::wire::DecodeError> {
        s::wire::decode(batch).map(|b| Self::place(&b))
    }
}

#[doc(hidden)]
pub mod glue {
    use super::{Policy, s};
    use crate::auction as w;

    pub fn describe<P: Policy>() -> w::PolicyInfo {
        let i = P::info();
        w::PolicyInfo {
            name: i.name,
            version: i.version,
            description: i.description,
        }
    }

    pub fn place<P: Policy>(batch: Vec<u8>) -> Vec<w::Outcome> {
        // The host encodes with the same `wire` code, so a decode error means a host/guest
        // layout mismatch: panicking makes it a fault with this message, and the host falls
        // back to its native policy.
        match P::place_bytes(&batch) {
            Ok(outcomes) => outcomes.into_iter().map(to_wit).collect(),
            Err(e) => panic!("{e}"),
        }
    }

    pub fn to_wit(o: s::Outcome) -> w::Outcome {
        match o {
            s::Outcome::Placed(c) => w::Outcome::Placed(c),
            s::Outcome::Failed(e) => w::Outcome::Failed(match e {
                s::PlacementError::NoCells => w::PlacementError::NoCells,
                s::PlacementError::RootfsMismatch => w::PlacementError::RootfsMismatch,
                s::PlacementError::VolumeDriverMismatch => w::PlacementError::VolumeDriverMismatch,
                s::PlacementError::PlacementTagMismatch => w::PlacementError::PlacementTagMismatch,
                s::PlacementError::InsufficientResources(sf) => {
                    let mut f = w::ResourceShortfall::empty();
                    f.set(w::ResourceShortfall::DISK, sf.disk);
                    f.set(w::ResourceShortfall::MEMORY, sf.memory);
                    f.set(w::ResourceShortfall::CONTAINERS, sf.containers);
                    w::PlacementError::InsufficientResources(f)
                }
                s::PlacementError::InflightStartLimit => w::PlacementError::InflightStartLimit,
                s::PlacementError::Other(m) => w::PlacementError::Other(m),
            }),
        }
    }
}
