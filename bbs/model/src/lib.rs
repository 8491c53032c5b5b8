//! Diego's records as they travel on the wire: DesiredLRPs, ActualLRPs, Tasks, Domains, Cells,
//! the action language, the typed errors, the requests and responses of the BBS API, and its
//! events.
//!
//! Field names and meanings are those of Diego's own models (the `.proto` files under `models/`
//! in cloudfoundry/bbs), in their JSON form: embedded messages are flattened, as Go's JSON tags
//! flatten them, so a later protobuf wire mode can serve Diego's own clients unchanged.
//!
//! **Architecture invariant:** this crate does no I/O and knows nothing of storage. Every request
//! type has a `validate()` that the BBS calls before it touches the store; an invalid record is
//! never stored. The state machines (ActualLRP, Task) and the crash restart policy live here as
//! pure functions so that the BBS, the converger and the rep share one definition.

pub mod actions;
pub mod actual_lrp;
pub mod auction;
pub mod cell;
pub mod check;
pub mod desired_lrp;
pub mod domain;
pub mod error;
pub mod events;
pub mod lifecycle;
pub mod modification_tag;
pub mod requests;
pub mod restart;
pub mod staging;
pub mod task;
pub mod validate;

pub use actions::Action;
pub use actual_lrp::{
    ActualLrp, ActualLrpInstanceKey, ActualLrpKey, ActualLrpNetInfo, ActualLrpState, PortMapping,
    Presence,
};
pub use auction::{LrpStartRequest, PlacementConstraint, Resource, TaskStartRequest};
pub use cell::{CellCapacity, CellPresence, Provider};
pub use check::{Check, CheckDefinition, HttpCheck, TcpCheck};
pub use desired_lrp::{
    DesiredLrp, DesiredLrpSchedulingInfo, DesiredLrpUpdate, EnvironmentVariable,
};
pub use error::{BbsError, ErrorType};
pub use events::Event;
pub use lifecycle::{LifecycleRecord, LifecycleVersion};
pub use modification_tag::ModificationTag;
pub use restart::RestartPolicy;
pub use staging::{LifecycleStaging, StagingResult};
pub use task::{Task, TaskDefinition, TaskState};

/// Nanoseconds since the Unix epoch, as Diego's `since`, `created_at` and `updated_at` fields.
pub type Timestamp = i64;
