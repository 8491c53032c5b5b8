//! Which auction policy places work: the built-in components embedded in this crate, the
//! operator's choice (recorded in the BBS so a restarted or failed-over brain uses it), and the
//! registry that runs it with the native classic policy as the fallback.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use base64::Engine as _;
use diego_host::{ActivePolicy, AuctionPolicy, DecidedBy, Host, Limits, PolicyRegistry};
use diego_model::requests::AuctionPolicyRecord;
use sha2::Digest as _;

use crate::api::{DegradedPolicy, PolicyChoice, PolicyListEntry, PolicyStatus};

/// A policy component shipped inside the binary.
#[derive(Debug, Clone, Copy)]
pub struct Builtin {
    pub name: &'static str,
    pub description: &'static str,
    pub component: &'static [u8],
}

/// The built-in policies; the first is the default.
pub const BUILTINS: &[Builtin] = &[
    Builtin {
        name: "classic",
        description: "Diego's scoring: balance by resources, zone balancing, locality",
        component: include_bytes!(env!("DIEGO_POLICY_CLASSIC_WASM")),
    },
    Builtin {
        name: "binpack",
        description: "fill the fullest cell that fits first; instances of a process still spread",
        component: include_bytes!(env!("DIEGO_POLICY_BINPACK_WASM")),
    },
    Builtin {
        name: "spread",
        description: "fewest containers wins; memory and disk only filter",
        component: include_bytes!(env!("DIEGO_POLICY_SPREAD_WASM")),
    },
];

pub const DEFAULT_POLICY: &str = "classic";

pub fn builtin(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let digest = sha2::Sha256::digest(bytes);
    let mut s = String::with_capacity(64);
    for b in digest {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Why a policy was not taken. Nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}")]
    BadRequest(String),
    #[error("the policy was refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Unavailable(String),
}

/// A resolved request: the component bytes and, for a built-in, its name.
#[derive(Debug)]
pub(crate) struct Candidate {
    pub bytes: Cow<'static, [u8]>,
    pub builtin: Option<&'static str>,
}

impl Candidate {
    pub fn from_choice(choice: &PolicyChoice) -> Result<Candidate, PolicyError> {
        match (&choice.builtin, &choice.component) {
            (Some(name), None) => {
                let b = builtin(name).ok_or_else(|| {
                    PolicyError::BadRequest(format!(
                        "no built-in policy named {name:?} (built-ins: {})",
                        BUILTINS
                            .iter()
                            .map(|b| b.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                Ok(Candidate {
                    bytes: Cow::Borrowed(b.component),
                    builtin: Some(b.name),
                })
            }
            (None, Some(b64)) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(b64.trim())
                    .map_err(|e| {
                        PolicyError::BadRequest(format!("component is not valid base64: {e}"))
                    })?;
                Ok(Candidate {
                    bytes: Cow::Owned(bytes),
                    builtin: None,
                })
            }
            _ => Err(PolicyError::BadRequest(
                "give exactly one of \"builtin\" (a built-in policy's name) or \"component\" \
                 (a Wasm component, base64)"
                    .into(),
            )),
        }
    }

    fn from_record(record: &AuctionPolicyRecord) -> Result<Candidate, String> {
        if record.builtin {
            let b = builtin(&record.name)
                .ok_or_else(|| format!("this brain has no built-in policy {:?}", record.name))?;
            return Ok(Candidate {
                bytes: Cow::Borrowed(b.component),
                builtin: Some(b.name),
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(record.component.trim())
            .map_err(|e| format!("the recorded component is not valid base64: {e}"))?;
        Ok(Candidate {
            bytes: Cow::Owned(bytes),
            builtin: None,
        })
    }

    /// Compiles and type-checks the component (off the async threads: compiling takes a while).
    pub async fn load(
        self,
        host: &Host,
        limits: &Limits,
    ) -> Result<(AuctionPolicy, Self), PolicyError> {
        let host = host.clone();
        let limits = limits.clone();
        tokio::task::spawn_blocking(move || {
            host.load_policy(&self.bytes)
                .map(|p| (p.with_limits(limits), self))
                .map_err(|e| PolicyError::Refused(e.to_string()))
        })
        .await
        .map_err(|e| PolicyError::Unavailable(format!("policy loading stopped: {e}")))?
    }
}

/// What the operator chose (or the default).
#[derive(Debug, Clone)]
struct Chosen {
    name: String,
    builtin: bool,
    sha256: String,
}

/// The active policy and its bookkeeping.
#[derive(Debug)]
pub(crate) struct Policies {
    pub host: Host,
    /// Per-call limits of every policy this brain loads.
    pub limits: Limits,
    pub registry: Arc<PolicyRegistry>,
    chosen: Mutex<Chosen>,
    /// Why this brain does not place with the policy recorded in the BBS, if it does not.
    note: Mutex<Option<String>>,
    /// Auctions hold it shared while they place; a swap takes it exclusively, so an auction in
    /// flight finishes on the policy it started with.
    pub gate: tokio::sync::RwLock<()>,
    fallbacks: AtomicU64,
    last_fault: Mutex<Option<String>>,
}

impl Policies {
    /// Starts on the default built-in (the classic component; native classic is only the
    /// fallback).
    pub async fn new(
        host: Host,
        registry: PolicyRegistry,
        limits: Limits,
    ) -> Result<Policies, PolicyError> {
        let registry = Arc::new(registry);
        let policies = Policies {
            host,
            limits,
            registry,
            chosen: Mutex::new(Chosen {
                name: "classic (native)".into(),
                builtin: true,
                sha256: String::new(),
            }),
            note: Mutex::new(None),
            gate: tokio::sync::RwLock::new(()),
            fallbacks: AtomicU64::new(0),
            last_fault: Mutex::new(None),
        };
        let default = Candidate::from_choice(&PolicyChoice::builtin(DEFAULT_POLICY))?;
        policies.install(default).await?;
        Ok(policies)
    }

    /// Loads, canaries and swaps in `candidate`; on any failure the current policy stays.
    /// Answers the policy that was current before (to revert to).
    pub async fn install(&self, candidate: Candidate) -> Result<Arc<ActivePolicy>, PolicyError> {
        let (policy, candidate) = candidate.load(&self.host, &self.limits).await?;
        let name = candidate
            .builtin
            .map_or_else(|| policy.name().to_owned(), str::to_owned);
        let sha256 = policy.info().sha256.clone();
        let _swap = self.gate.write().await;
        let previous = self.registry.current();
        let registry = self.registry.clone();
        tokio::task::spawn_blocking(move || registry.install(policy))
            .await
            .map_err(|e| PolicyError::Unavailable(format!("policy canary stopped: {e}")))?
            .map_err(|e| PolicyError::Refused(e.to_string()))?;
        *lock(&self.chosen) = Chosen {
            name,
            builtin: candidate.builtin.is_some(),
            sha256,
        };
        Ok(previous)
    }

    /// Puts `previous` back (after a swap the BBS would not record).
    pub async fn restore(&self, previous: Arc<ActivePolicy>, chosen: (String, bool, String)) {
        let _swap = self.gate.write().await;
        match &*previous {
            ActivePolicy::Native => self.registry.revert_to_native(),
            ActivePolicy::Wasm(p) => {
                let registry = self.registry.clone();
                let p = (**p).clone();
                let back = tokio::task::spawn_blocking(move || registry.install(p)).await;
                if !matches!(back, Ok(Ok(()))) {
                    self.registry.revert_to_native();
                }
            }
        }
        *lock(&self.chosen) = Chosen {
            name: chosen.0,
            builtin: chosen.1,
            sha256: chosen.2,
        };
    }

    /// Places with the native classic policy (the fallback) until a policy is installed.
    pub async fn use_native(&self) {
        let _swap = self.gate.write().await;
        self.registry.revert_to_native();
        *lock(&self.chosen) = Chosen {
            name: "classic (native)".into(),
            builtin: true,
            sha256: String::new(),
        };
    }

    pub fn chosen(&self) -> (String, bool, String) {
        let c = lock(&self.chosen);
        (c.name.clone(), c.builtin, c.sha256.clone())
    }

    pub fn set_note(&self, note: Option<String>) {
        *lock(&self.note) = note;
    }

    /// Takes the policy recorded in the BBS (on becoming active). A record that cannot be
    /// used leaves the default (classic) and says why in the status.
    pub async fn adopt(&self, record: Result<Option<AuctionPolicyRecord>, String>) {
        let record = match record {
            Ok(Some(r)) => r,
            Ok(None) => {
                self.set_note(None);
                if self.chosen().0 != DEFAULT_POLICY {
                    self.fall_back_to_default(None).await;
                }
                return;
            }
            Err(e) => {
                self.set_note(Some(format!(
                    "cannot read the recorded policy from the BBS ({e}); placing with {}",
                    self.chosen().0
                )));
                return;
            }
        };
        let (name, builtin, sha256) = self.chosen();
        let same = if record.builtin {
            builtin && name == record.name
        } else {
            !builtin && sha256 == record.sha256
        };
        // Already placing with it (a re-election), unless the breaker switched it off.
        let degraded = self
            .registry
            .status()
            .degraded
            .is_some_and(|d| d.sha256 == sha256);
        if same && !degraded {
            self.set_note(None);
            return;
        }
        let installed = match Candidate::from_record(&record) {
            Ok(c) => self.install(c).await.map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match installed {
            Ok(_) => {
                tracing::info!(policy = %record.name, "placing with the policy recorded in the BBS");
                self.set_note(None);
            }
            Err(e) => {
                tracing::error!(policy = %record.name, error = %e, "the recorded auction policy cannot be loaded; placing with classic");
                self.fall_back_to_default(Some(format!(
                    "the policy recorded in the BBS ({:?}, set by {}) cannot be loaded: {e}; \
                     placing with {DEFAULT_POLICY}",
                    record.name, record.set_by
                )))
                .await;
            }
        }
    }

    async fn fall_back_to_default(&self, note: Option<String>) {
        let default = Candidate::from_choice(&PolicyChoice::builtin(DEFAULT_POLICY));
        let installed = match default {
            Ok(c) => self.install(c).await.map(drop),
            Err(e) => Err(e),
        };
        if let Err(e) = installed {
            // The embedded classic failing its canary would be a build defect; native classic
            // places the same way.
            tracing::error!(error = %e, "the built-in classic policy cannot be installed; placing with native classic");
            self.registry.revert_to_native();
        }
        self.set_note(note);
    }

    /// Books who decided a batch (fallback count and last fault for the status).
    pub fn observe(&self, decided_by: &DecidedBy) {
        if let DecidedBy::Fallback { fault, .. } | DecidedBy::Failed { fault, .. } = decided_by {
            self.fallbacks.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(diego_telemetry::names::AUCTIONEER_POLICY_FALLBACKS).increment(1);
            *lock(&self.last_fault) = Some(fault.to_string());
        }
    }

    pub fn status(&self, active: bool, active_url: Option<String>) -> PolicyStatus {
        let (name, builtin, sha256) = self.chosen();
        let registry = self.registry.status();
        PolicyStatus {
            name,
            builtin,
            sha256,
            placing_with: registry.active,
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            last_fault: lock(&self.last_fault).clone(),
            degraded: registry.degraded.map(|d| DegradedPolicy {
                name: d.name,
                sha256: d.sha256,
                reason: d.reason,
            }),
            note: lock(&self.note).clone(),
            active,
            active_url,
        }
    }

    pub fn list(&self) -> Vec<PolicyListEntry> {
        let (name, builtin, sha256) = self.chosen();
        let mut list: Vec<PolicyListEntry> = BUILTINS
            .iter()
            .map(|b| PolicyListEntry {
                name: b.name.to_owned(),
                builtin: true,
                sha256: sha256_hex(b.component),
                description: b.description.to_owned(),
                active: builtin && name == b.name,
            })
            .collect();
        if !builtin {
            list.push(PolicyListEntry {
                name,
                builtin: false,
                sha256,
                description: "set by an operator".into(),
                active: true,
            });
        }
        list
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}
