//! The events of the BBS event stream, named as Diego names them.

use serde::{Deserialize, Serialize};

use crate::{ActualLrp, CellPresence, DesiredLrp, Task, Timestamp};

/// One change to the BBS's records. On the wire (SSE) the event name is [`Event::name`] and the
/// data is this enum's JSON, which also carries the name in `type`.
// Events carry whole records (as Diego's do); they are built once per change and moved, not
// stored in bulk, so the size difference between variants costs nothing worth a Box.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    DesiredLrpCreated {
        desired_lrp: DesiredLrp,
    },
    DesiredLrpChanged {
        before: DesiredLrp,
        after: DesiredLrp,
    },
    DesiredLrpRemoved {
        desired_lrp: DesiredLrp,
    },
    ActualLrpInstanceCreated {
        actual_lrp: ActualLrp,
    },
    ActualLrpInstanceChanged {
        before: ActualLrp,
        after: ActualLrp,
    },
    ActualLrpInstanceRemoved {
        actual_lrp: ActualLrp,
    },
    /// An instance crashed: its key, the instance key it crashed on, and its crash bookkeeping.
    ActualLrpCrashed {
        process_guid: String,
        index: i32,
        domain: String,
        instance_guid: String,
        cell_id: String,
        crash_count: i32,
        crash_reason: String,
        since: Timestamp,
    },
    TaskCreated {
        task: Task,
    },
    TaskChanged {
        before: Task,
        after: Task,
    },
    TaskRemoved {
        task: Task,
    },
    /// Not in Diego's BBS (there Locket tells of cells): a cell registered its presence.
    CellPresenceCreated {
        cell: CellPresence,
    },
    /// A cell's presence lapsed or was removed.
    CellPresenceRemoved {
        cell: CellPresence,
    },
}

/// Which stream an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventFamily {
    Lrp,
    Task,
    Cell,
}

impl Event {
    /// The event's name: `desired_lrp_created`, `actual_lrp_crashed`, ...
    pub fn name(&self) -> &'static str {
        match self {
            Event::DesiredLrpCreated { .. } => "desired_lrp_created",
            Event::DesiredLrpChanged { .. } => "desired_lrp_changed",
            Event::DesiredLrpRemoved { .. } => "desired_lrp_removed",
            Event::ActualLrpInstanceCreated { .. } => "actual_lrp_instance_created",
            Event::ActualLrpInstanceChanged { .. } => "actual_lrp_instance_changed",
            Event::ActualLrpInstanceRemoved { .. } => "actual_lrp_instance_removed",
            Event::ActualLrpCrashed { .. } => "actual_lrp_crashed",
            Event::TaskCreated { .. } => "task_created",
            Event::TaskChanged { .. } => "task_changed",
            Event::TaskRemoved { .. } => "task_removed",
            Event::CellPresenceCreated { .. } => "cell_presence_created",
            Event::CellPresenceRemoved { .. } => "cell_presence_removed",
        }
    }

    pub fn family(&self) -> EventFamily {
        match self {
            Event::TaskCreated { .. } | Event::TaskChanged { .. } | Event::TaskRemoved { .. } => {
                EventFamily::Task
            }
            Event::CellPresenceCreated { .. } | Event::CellPresenceRemoved { .. } => {
                EventFamily::Cell
            }
            _ => EventFamily::Lrp,
        }
    }

    /// Does this event concern `cell_id`? Events with no cell (desired LRPs) concern every cell,
    /// as Diego's cell filter passes them.
    pub fn concerns_cell(&self, cell_id: &str) -> bool {
        match self {
            Event::ActualLrpInstanceCreated { actual_lrp }
            | Event::ActualLrpInstanceRemoved { actual_lrp } => actual_lrp.cell_id == cell_id,
            Event::ActualLrpInstanceChanged { before, after } => {
                before.cell_id == cell_id || after.cell_id == cell_id
            }
            Event::ActualLrpCrashed { cell_id: c, .. } => c == cell_id,
            Event::TaskCreated { task } | Event::TaskRemoved { task } => task.cell_id == cell_id,
            Event::TaskChanged { before, after } => {
                before.cell_id == cell_id || after.cell_id == cell_id
            }
            Event::CellPresenceCreated { cell } | Event::CellPresenceRemoved { cell } => {
                cell.cell_id == cell_id
            }
            Event::DesiredLrpCreated { .. }
            | Event::DesiredLrpChanged { .. }
            | Event::DesiredLrpRemoved { .. } => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_match_the_json_tag() {
        let event = Event::TaskRemoved {
            task: Task::default(),
        };
        let v = serde_json::to_value(&event).unwrap();
        assert_eq!(v["type"], event.name());
        let crashed = Event::ActualLrpCrashed {
            process_guid: "p".into(),
            index: 0,
            domain: "d".into(),
            instance_guid: "i".into(),
            cell_id: "c".into(),
            crash_count: 1,
            crash_reason: "boom".into(),
            since: 1,
        };
        assert_eq!(
            serde_json::to_value(&crashed).unwrap()["type"],
            crashed.name()
        );
        assert!(crashed.concerns_cell("c") && !crashed.concerns_cell("x"));
    }
}
