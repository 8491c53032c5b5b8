//! Who a login is for: the user name names an instance (`<process-guid>/<index>`, or Cloud
//! Foundry's `cf:<app-guid>/<index>`), found in the BBS with its cell.

use diego_bbs_client::BbsClient;
use diego_model::desired_lrp::SSH_ROUTES_KEY;
use diego_model::requests::{ActualLrpsRequest, DesiredLrpsRequest};
use diego_model::{ActualLrpState, ErrorType, PortMapping, Presence};

/// What a user name names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Login {
    /// `<process-guid>/<index>`.
    Process { process_guid: String, index: i32 },
    /// `cf:<app-guid>/<index>`: the app's newest process.
    App { app_guid: String, index: i32 },
}

/// Why a login is refused; the text is what the user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error(
        "user {0:?} names no instance: log in as <process-guid>/<index> or cf:<app-guid>/<index>"
    )]
    BadUser(String),
    #[error("no app process {0} (is the app running? `diego app APP` shows its process guid)")]
    UnknownProcess(String),
    #[error("no running process of app {0}")]
    UnknownApp(String),
    #[error("SSH is disabled for {0}: enable it with `diego enable-ssh APP`")]
    Disabled(String),
    #[error("{what} has no instance {index} (it has {instances})")]
    NoSuchIndex {
        what: String,
        index: i32,
        instances: i32,
    },
    #[error("instance {index} of {what} is not running (it is {state})")]
    NotRunning {
        what: String,
        index: i32,
        state: String,
    },
    #[error("the cell {cell_id} of instance {index} of {what} is not reachable now")]
    CellGone {
        what: String,
        index: i32,
        cell_id: String,
    },
    #[error("cannot look the instance up: {0}")]
    Lookup(String),
}

/// Parses a user name.
pub fn parse_login(user: &str) -> Result<Login, Refusal> {
    let bad = || Refusal::BadUser(user.to_string());
    let (guid, index) = user.rsplit_once('/').ok_or_else(bad)?;
    let index: i32 = index.parse().map_err(|_| bad())?;
    if index < 0 {
        return Err(bad());
    }
    let valid = |g: &str| {
        !g.is_empty()
            && g.len() <= 256
            && g.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    match guid.strip_prefix("cf:") {
        Some(app_guid) if valid(app_guid) => Ok(Login::App {
            app_guid: app_guid.to_string(),
            index,
        }),
        None if valid(guid) => Ok(Login::Process {
            process_guid: guid.to_string(),
            index,
        }),
        _ => Err(bad()),
    }
}

/// The running instance a login reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub process_guid: String,
    pub index: i32,
    /// How users call it: the app's name and the process (`app web (process P)`).
    pub what: String,
    pub instance_guid: String,
    pub cell_id: String,
    pub rep_url: String,
    /// Where the instance's host ports are.
    pub address: String,
    pub ports: Vec<PortMapping>,
}

impl Target {
    /// The host port mapped to `container_port`, if the instance exposes it.
    pub fn host_port(&self, container_port: u32) -> Option<u32> {
        self.ports
            .iter()
            .find(|p| p.container_port == container_port && p.host_port != 0)
            .map(|p| p.host_port)
    }

    /// The container ports the instance exposes.
    pub fn exposed(&self) -> Vec<u32> {
        self.ports.iter().map(|p| p.container_port).collect()
    }
}

fn lookup(e: impl std::fmt::Display) -> Refusal {
    Refusal::Lookup(e.to_string())
}

/// The process guid of `login` (for `cf:` logins: the app's newest process in the BBS).
pub async fn process_guid_of(bbs: &BbsClient, login: &Login) -> Result<String, Refusal> {
    match login {
        Login::Process { process_guid, .. } => Ok(process_guid.clone()),
        Login::App { app_guid, .. } => {
            let lrps = bbs
                .desired_lrps(&DesiredLrpsRequest::default())
                .await
                .map_err(lookup)?;
            lrps.iter()
                .filter_map(|d| {
                    let version = d.process_guid.strip_prefix(app_guid.as_str())?;
                    version.strip_prefix('-')?.parse::<u64>().ok()
                })
                .max()
                .map(|v| format!("{app_guid}-{v}"))
                .ok_or_else(|| Refusal::UnknownApp(app_guid.clone()))
        }
    }
}

/// Finds instance `index` of `process_guid` and its cell, refusing what cannot be reached.
pub async fn resolve(bbs: &BbsClient, process_guid: &str, index: i32) -> Result<Target, Refusal> {
    let desired = match bbs.desired_lrp(process_guid).await {
        Ok(d) => d,
        Err(e) if e.kind() == Some(ErrorType::ResourceNotFound) => {
            return Err(Refusal::UnknownProcess(process_guid.to_string()));
        }
        Err(e) => return Err(lookup(e)),
    };
    let what = if desired.annotation.is_empty() {
        format!("process {process_guid}")
    } else {
        format!("app {} (process {process_guid})", desired.annotation)
    };
    if !desired
        .routes
        .as_ref()
        .is_some_and(|r| r.contains_key(SSH_ROUTES_KEY))
    {
        return Err(Refusal::Disabled(what));
    }
    if index >= desired.instances {
        return Err(Refusal::NoSuchIndex {
            what,
            index,
            instances: desired.instances,
        });
    }
    let filter = ActualLrpsRequest {
        process_guid: process_guid.to_string(),
        index: Some(index),
        ..ActualLrpsRequest::default()
    };
    let actuals = bbs.actual_lrps(&filter).await.map_err(lookup)?;
    // the ordinary instance, or while it is replaced, the evacuating copy still running
    let running = actuals
        .iter()
        .filter(|a| a.state == ActualLrpState::Running)
        .min_by_key(|a| match a.presence {
            Presence::Ordinary => 0,
            Presence::Evacuating => 1,
            Presence::Suspect => 2,
        });
    let Some(actual) = running else {
        let state = actuals
            .iter()
            .find(|a| a.presence == Presence::Ordinary)
            .map(|a| match (&a.state, a.placement_error.is_empty()) {
                (_, false) => format!("unplaced: {}", a.placement_error),
                (ActualLrpState::Crashed, _) if !a.crash_reason.is_empty() => {
                    format!("CRASHED: {}", a.crash_reason)
                }
                (state, _) => format!("{state:?}").to_uppercase(),
            })
            .unwrap_or_else(|| "missing".into());
        return Err(Refusal::NotRunning { what, index, state });
    };
    let cells = bbs.cells().await.map_err(lookup)?;
    let Some(cell) = cells.iter().find(|c| c.cell_id == actual.cell_id) else {
        return Err(Refusal::CellGone {
            what,
            index,
            cell_id: actual.cell_id.clone(),
        });
    };
    Ok(Target {
        process_guid: process_guid.to_string(),
        index,
        what,
        instance_guid: actual.instance_guid.clone(),
        cell_id: actual.cell_id.clone(),
        rep_url: cell.rep_url.clone(),
        address: actual.address.clone(),
        ports: actual.ports.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_names_name_an_instance() {
        assert_eq!(
            parse_login("abc-123-4/2"),
            Ok(Login::Process {
                process_guid: "abc-123-4".into(),
                index: 2
            })
        );
        assert_eq!(
            parse_login("cf:abc-123/0"),
            Ok(Login::App {
                app_guid: "abc-123".into(),
                index: 0
            })
        );
        for bad in [
            "", "abc", "abc/", "/0", "abc/-1", "abc/x", "a b/0", "cf:/0", "x:y/0",
        ] {
            assert!(
                matches!(parse_login(bad), Err(Refusal::BadUser(_))),
                "{bad:?} accepted"
            );
        }
        assert!(
            Refusal::BadUser("x".into())
                .to_string()
                .contains("<process-guid>/<index>")
        );
    }

    #[test]
    fn only_exposed_ports_are_forwarded() {
        let target = Target {
            process_guid: "p".into(),
            index: 0,
            what: "p".into(),
            instance_guid: "i".into(),
            cell_id: "c".into(),
            rep_url: "http://127.0.0.1:1".into(),
            address: "127.0.0.1".into(),
            ports: vec![PortMapping {
                container_port: 8080,
                host_port: 40001,
                ..PortMapping::default()
            }],
        };
        assert_eq!(target.host_port(8080), Some(40001));
        assert_eq!(target.host_port(22), None);
        assert_eq!(target.exposed(), [8080]);
    }
}
