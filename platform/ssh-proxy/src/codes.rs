//! One-time codes: the password of an SSH login (Cloud Foundry's `cf ssh-code`, which asks
//! UAA; here the proxy issues them itself).
//!
//! A code is 128 random bits, bound to the process guid it was issued for, good once, for
//! [`DEFAULT_TTL`]. A used code is remembered until it would have expired, so a second login
//! with it hears "already used" rather than "wrong".

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

/// How long a code is good for (UAA's authorization codes: 5 minutes).
pub const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// Codes outstanding at once, at most (a bound on what a flood of requests can hold).
pub const MAX_OUTSTANDING: usize = 100_000;

/// A code as issued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedCode {
    pub code: String,
    pub process_guid: String,
    pub expires_at: SystemTime,
}

/// Why a code was not taken; the text is what the user reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodeRefusal {
    #[error("the code is wrong: get one with `diego ssh-code APP`")]
    Unknown,
    #[error(
        "the code has expired (codes are good for {ttl_s} s): get a new one with `diego ssh-code APP`"
    )]
    Expired { ttl_s: u64 },
    #[error(
        "the code was already used (each is good once): get a new one with `diego ssh-code APP`"
    )]
    Used,
    #[error("the code was issued for another app (process {issued_for})")]
    OtherProcess { issued_for: String },
}

/// Why no code was issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("too many SSH codes outstanding ({0}); try again in a few minutes")]
    TooMany(usize),
    #[error("no randomness for an SSH code: {0}")]
    Random(getrandom::Error),
}

#[derive(Debug)]
struct Entry {
    process_guid: String,
    expires: Instant,
    used: bool,
}

/// The outstanding codes.
#[derive(Debug)]
pub struct CodeStore {
    ttl: Duration,
    max: usize,
    codes: Mutex<HashMap<String, Entry>>,
}

impl Default for CodeStore {
    fn default() -> Self {
        CodeStore::new(DEFAULT_TTL, MAX_OUTSTANDING)
    }
}

impl CodeStore {
    pub fn new(ttl: Duration, max: usize) -> Self {
        CodeStore {
            ttl,
            max,
            codes: Mutex::new(HashMap::new()),
        }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    fn codes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // a panic while holding the map leaves it consistent: every change is one insert or
        // one field write
        self.codes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A new code for `process_guid`.
    pub fn issue(&self, process_guid: &str) -> Result<IssuedCode, IssueError> {
        self.issue_at(process_guid, Instant::now())
    }

    fn issue_at(&self, process_guid: &str, now: Instant) -> Result<IssuedCode, IssueError> {
        let mut random = [0u8; 16];
        getrandom::fill(&mut random).map_err(IssueError::Random)?;
        let code: String = random.iter().map(|b| format!("{b:02x}")).collect();
        let mut codes = self.codes();
        codes.retain(|_, e| e.expires > now);
        if codes.len() >= self.max {
            return Err(IssueError::TooMany(codes.len()));
        }
        codes.insert(
            code.clone(),
            Entry {
                process_guid: process_guid.to_string(),
                expires: now + self.ttl,
                used: false,
            },
        );
        Ok(IssuedCode {
            code,
            process_guid: process_guid.to_string(),
            expires_at: SystemTime::now() + self.ttl,
        })
    }

    /// Takes `code` for a login to `process_guid`: it is then used.
    pub fn redeem(&self, code: &str, process_guid: &str) -> Result<(), CodeRefusal> {
        self.redeem_at(code, process_guid, Instant::now())
    }

    fn redeem_at(&self, code: &str, process_guid: &str, now: Instant) -> Result<(), CodeRefusal> {
        let mut codes = self.codes();
        let entry = codes.get_mut(code.trim()).ok_or(CodeRefusal::Unknown)?;
        if entry.expires <= now {
            return Err(CodeRefusal::Expired {
                ttl_s: self.ttl.as_secs(),
            });
        }
        if entry.used {
            return Err(CodeRefusal::Used);
        }
        if entry.process_guid != process_guid {
            return Err(CodeRefusal::OtherProcess {
                issued_for: entry.process_guid.clone(),
            });
        }
        entry.used = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_code_is_good_once_for_its_process_until_it_expires() {
        let store = CodeStore::new(Duration::from_secs(300), 10);
        let t0 = Instant::now();
        let a = store.issue_at("app-1", t0).unwrap();
        let b = store.issue_at("app-1", t0).unwrap();
        assert_ne!(a.code, b.code);
        assert_eq!(a.code.len(), 32);
        assert_eq!(
            store.redeem_at("nope", "app-1", t0),
            Err(CodeRefusal::Unknown)
        );
        assert_eq!(
            store.redeem_at(&a.code, "app-2", t0),
            Err(CodeRefusal::OtherProcess {
                issued_for: "app-1".into()
            })
        );
        // a refused login does not use the code up; pasted with a newline, it still works
        assert_eq!(
            store.redeem_at(&format!("{}\n", a.code), "app-1", t0),
            Ok(())
        );
        assert_eq!(
            store.redeem_at(&a.code, "app-1", t0),
            Err(CodeRefusal::Used)
        );
        let later = t0 + Duration::from_secs(301);
        assert_eq!(
            store.redeem_at(&b.code, "app-1", later),
            Err(CodeRefusal::Expired { ttl_s: 300 })
        );
        // expired codes are forgotten when the next is issued
        store.issue_at("app-1", later).unwrap();
        assert_eq!(store.codes().len(), 1);
        assert_eq!(
            store.redeem_at(&b.code, "app-1", later),
            Err(CodeRefusal::Unknown)
        );
    }

    #[test]
    fn outstanding_codes_are_bounded() {
        let store = CodeStore::new(Duration::from_secs(300), 2);
        let t0 = Instant::now();
        store.issue_at("p", t0).unwrap();
        store.issue_at("p", t0).unwrap();
        assert!(matches!(
            store.issue_at("p", t0),
            Err(IssueError::TooMany(2))
        ));
        // room again once they expire
        store.issue_at("p", t0 + Duration::from_secs(300)).unwrap();
    }

    #[test]
    fn refusals_say_what_to_do() {
        for refusal in [
            CodeRefusal::Unknown,
            CodeRefusal::Expired { ttl_s: 300 },
            CodeRefusal::Used,
        ] {
            assert!(refusal.to_string().contains("diego ssh-code"), "{refusal}");
        }
    }
}
