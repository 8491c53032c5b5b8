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

    /// A rootfs URL: `preloaded:STACK`, `docker:///image`, or another scheme a cell provides.
    pub fn rootfs(&mut self, rootfs: &str) {
        match rootfs.split_once(':') {
            Some((scheme, rest)) if !scheme.is_empty() && !rest.is_empty() => {
                self.check(
                    scheme
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)),
                    || format!("rootfs {rootfs:?} has an invalid scheme"),
                );
            }
            _ => self.add(format!(
                "rootfs {rootfs:?} must be a URL such as preloaded:cflinuxfs4 or docker:///busybox"
            )),
        }
    }

    /// The resource fields DesiredLRPs and Tasks share.
    pub fn resources(&mut self, memory_mb: i32, disk_mb: i32, max_pids: i32, cpu_weight: u32) {
        self.check(memory_mb >= 0, || {
            format!("memory_mb must be >= 0, got {memory_mb}")
        });
        self.check(disk_mb >= 0, || {
            format!("disk_mb must be >= 0, got {disk_mb}")
        });
        self.check(max_pids >= 0, || {
            format!("max_pids must be >= 0, got {max_pids}")
        });
        self.check(cpu_weight <= 100, || {
            format!("cpu_weight must be 0 to 100, got {cpu_weight}")
        });
    }

    /// Registry credentials come as a pair or not at all.
    pub fn image_credentials(&mut self, username: &str, password: &str) {
        self.check(username.is_empty() == password.is_empty(), || {
            "image_username and image_password go together".into()
        });
    }

    /// An annotation of at most [`crate::desired_lrp::MAX_ANNOTATION_BYTES`].
    pub fn annotation(&mut self, annotation: &str) {
        let max = crate::desired_lrp::MAX_ANNOTATION_BYTES;
        self.check(annotation.len() <= max, || {
            format!("annotation is {} bytes, more than {max}", annotation.len())
        });
    }

    /// A list of records a request names: at most `max` of them.
    pub fn records(&mut self, field: &str, count: usize, max: usize) {
        self.check(count <= max, || {
            format!("{field} names {count} records, more than the limit of {max} per request")
        });
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
