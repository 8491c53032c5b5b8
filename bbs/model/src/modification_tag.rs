//! `ModificationTag{epoch, index}`: an epoch set when a record is created, an index bumped on
//! every change. Consumers drop stale events with [`ModificationTag::succeeded_by`].

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct ModificationTag {
    pub epoch: String,
    pub index: u32,
}

impl ModificationTag {
    pub fn new(epoch: impl Into<String>) -> Self {
        Self {
            epoch: epoch.into(),
            index: 0,
        }
    }

    /// The tag after one more change.
    pub fn incremented(&self) -> Self {
        Self {
            epoch: self.epoch.clone(),
            index: self.index.wrapping_add(1),
        }
    }

    pub fn increment(&mut self) {
        self.index = self.index.wrapping_add(1);
    }

    /// Diego's `SucceededBy`: true if `later` is newer than `self`, or if the two cannot be
    /// compared (an empty or different epoch), in which case consumers take the newer record.
    pub fn succeeded_by(&self, later: &ModificationTag) -> bool {
        self.epoch.is_empty()
            || later.epoch.is_empty()
            || self.epoch != later.epoch
            || self.index < later.index
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn succeeded_by_follows_diego() {
        let a = ModificationTag {
            epoch: "e".into(),
            index: 1,
        };
        assert!(a.succeeded_by(&a.incremented()));
        assert!(!a.incremented().succeeded_by(&a));
        assert!(!a.succeeded_by(&a));
        assert!(a.succeeded_by(&ModificationTag {
            epoch: "f".into(),
            index: 0
        }));
        assert!(ModificationTag::default().succeeded_by(&a));
    }
}
