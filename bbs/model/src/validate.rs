//! Small checks shared by every record's `validate()`.

use crate::error::BbsError;

/// The longest guid Diego's SQL schema holds.
pub const MAX_GUID_LEN: usize = 255;

/// Collects every problem of a record, so that one response names them all.
#[derive(Debug, Default)]
pub struct Problems(Vec<String>);

impl Problems {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, problem: impl Into<String>) {
        self.0.push(problem.into());
    }

    pub fn check(&mut self, ok: bool, problem: impl FnOnce() -> String) {
        if !ok {
            self.0.push(problem());
        }
    }

    /// A process or task guid: letters, digits, `-` and `_` only (so never a `/`), 1 to 255 long.
    pub fn guid(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(format!("{field} is required"));
        } else if value.len() > MAX_GUID_LEN {
            self.add(format!("{field} is longer than {MAX_GUID_LEN} characters"));
        } else if !value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            self.add(format!(
                "{field} {value:?} may contain only letters, digits, '-' and '_'"
            ));
        }
    }

    /// A name that becomes part of a store key (domain, cell id, instance guid): no `/`.
    pub fn name(&mut self, field: &str, value: &str) {
        if value.is_empty() {
            self.add(format!("{field} is required"));
        } else if value.len() > MAX_GUID_LEN {
            self.add(format!("{field} is longer than {MAX_GUID_LEN} characters"));
        } else if value.contains('/') || value.chars().any(char::is_control) {
            self.add(format!(
                "{field} {value:?} may not contain '/' or control characters"
            ));
        }
    }

    /// Fails with InvalidRecord naming every problem, or succeeds when there are none.
    pub fn into_record_result(self, what: &str) -> Result<(), BbsError> {
        self.into_result(|m| BbsError::invalid_record(format!("invalid {what}: {m}")))
    }

    /// Fails with InvalidRequest naming every problem, or succeeds when there are none.
    pub fn into_request_result(self) -> Result<(), BbsError> {
        self.into_result(BbsError::invalid_request)
    }

    fn into_result(self, make: impl FnOnce(String) -> BbsError) -> Result<(), BbsError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(make(self.0.join("; ")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_refuse_slashes_and_empties() {
        let mut p = Problems::new();
        p.guid("process_guid", "web-app_1");
        assert!(p.0.is_empty());
        p.guid("process_guid", "a/b");
        p.guid("process_guid", "");
        p.guid("process_guid", &"x".repeat(256));
        assert_eq!(p.0.len(), 3);
        let err = p.into_request_result().unwrap_err();
        assert!(err.message.contains("'-' and '_'"), "{}", err.message);
    }
}
