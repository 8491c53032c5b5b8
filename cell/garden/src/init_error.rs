//! Errors of a container's own set-up and of starting a process in it (what
//! `diego-garden-init` does, [`crate::container`] and [`crate::security`]): each names the
//! step that failed and, for a failed system call, the OS error (`errno`). The init helper
//! prints them as `error: …` lines the server turns into [`crate::Error::Init`] or
//! [`crate::Error::ProcessStart`]; in-process callers get [`crate::Error`] through `From`.

use nix::errno::Errno;

/// Why setting up a container, or a process in it, failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// A system call failed.
    #[error("{step}: {errno}")]
    Sys {
        /// What was being done, naming the path or object.
        step: String,
        /// The OS error.
        #[source]
        errno: Errno,
    },
    /// A file operation failed.
    #[error("{step}: {source}")]
    Io {
        /// What was being done, naming the path.
        step: String,
        /// The I/O error (with its OS error, when it has one).
        #[source]
        source: std::io::Error,
    },
    /// The request or the image asks for something that is refused (not an OS failure).
    #[error("{step}: {reason}")]
    Refused {
        /// What was being done.
        step: String,
        /// Why it is refused.
        reason: String,
    },
    /// The configuration handed to the helper cannot be read.
    #[error("parse {what}: {source}")]
    Config {
        /// `init config`, `exec spec`.
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The runtime spec's seccomp profile cannot be turned into a filter.
    #[error("seccomp profile: {0}")]
    Seccomp(String),
}

impl InitError {
    /// Maps a failed system call of `step`.
    pub fn sys(step: impl Into<String>) -> impl FnOnce(Errno) -> InitError {
        move |errno| InitError::Sys {
            step: step.into(),
            errno,
        }
    }

    /// The system call of `step` just failed: the thread's `errno`.
    pub fn last_os(step: impl Into<String>) -> InitError {
        InitError::Sys {
            step: step.into(),
            errno: Errno::last(),
        }
    }

    /// Maps a failed file operation of `step`.
    pub fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> InitError {
        move |source| InitError::Io {
            step: step.into(),
            source,
        }
    }

    /// A refusal of `step`.
    pub fn refused(step: impl Into<String>, reason: impl Into<String>) -> InitError {
        InitError::Refused {
            step: step.into(),
            reason: reason.into(),
        }
    }

    /// The OS error, if a system call or file operation failed.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            InitError::Sys { errno, .. } => Some(*errno),
            InitError::Io { source, .. } => source.raw_os_error().map(Errno::from_raw),
            _ => None,
        }
    }
}

impl From<InitError> for crate::Error {
    fn from(e: InitError) -> Self {
        match e {
            InitError::Sys { step, errno } => crate::Error::sys(step, errno),
            InitError::Io { step, source } => crate::Error::io(step, source),
            InitError::Refused { .. } => crate::Error::InvalidRequest(e.to_string()),
            other @ (InitError::Config { .. } | InitError::Seccomp(_)) => {
                crate::Error::io("container set-up", std::io::Error::other(other))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_the_step_and_the_errno() {
        let e = InitError::sys("mount proc on /r/proc")(Errno::EPERM);
        assert_eq!(
            e.to_string(),
            "mount proc on /r/proc: EPERM: Operation not permitted"
        );
        assert_eq!(e.errno(), Some(Errno::EPERM));
        let e = InitError::io("open /proc/1/ns/net")(std::io::Error::from_raw_os_error(2));
        assert_eq!(e.errno(), Some(Errno::ENOENT));
        assert!(e.to_string().starts_with("open /proc/1/ns/net: "), "{e}");
        let crate_err = crate::Error::from(InitError::refused("bind mount /x", "a symlink"));
        assert_eq!(crate_err.kind(), "InvalidRequest");
        let crate_err = crate::Error::from(InitError::sys("setns net")(Errno::EINVAL));
        assert!(crate_err.to_string().contains("setns net"), "{crate_err}");
    }
}
