//! The crate's error type. Messages are lower-case, without a trailing period, and name the
//! handle, path or command that failed.

use std::path::PathBuf;

/// Result alias for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the Garden backend, its server and its client.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (bad handle, bad path, bad spec).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A container with this handle already exists.
    #[error("container {0} already exists")]
    HandleExists(String),
    /// No container with this handle.
    #[error("container {0} not found")]
    ContainerNotFound(String),
    /// No process with this id in the container.
    #[error("process {id} not found in container {handle}")]
    ProcessNotFound {
        /// Container handle.
        handle: String,
        /// Process id.
        id: String,
    },
    /// No property with this name.
    #[error("property {name} not found on container {handle}")]
    PropertyNotFound {
        /// Container handle.
        handle: String,
        /// Property name.
        name: String,
    },
    /// A tar entry or a path would leave the container's root filesystem.
    #[error("path escapes container {handle}: {path}: {reason}")]
    PathEscape {
        /// Container handle.
        handle: String,
        /// The offending path (as in the archive or request).
        path: String,
        /// Why it is refused.
        reason: String,
    },
    /// A file system or system call failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the path.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// An external command (ip, iptables) failed.
    #[error("command `{command}` failed: {message}")]
    Command {
        /// The command line.
        command: String,
        /// Exit status and stderr.
        message: String,
    },
    /// The container's init process failed to start.
    #[error("container {handle} failed to start: {message}")]
    Init {
        /// Container handle.
        handle: String,
        /// What init reported.
        message: String,
    },
    /// A process could not be started in the container.
    #[error("cannot run {program} in container {handle}: {message}")]
    ProcessStart {
        /// Container handle.
        handle: String,
        /// argv[0].
        program: String,
        /// Why.
        message: String,
    },
    /// A stored record could not be read or written.
    #[error("bad record {path}: {message}")]
    Record {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// The remote server answered with an error.
    #[error("garden server error ({kind}): {message}")]
    Remote {
        /// The error kind from the body.
        kind: String,
        /// The message from the body.
        message: String,
    },
    /// The HTTP transport failed.
    #[error("garden http request failed: {0}")]
    Transport(String),
}

impl Error {
    /// Wraps an I/O error with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Wraps an errno with context.
    pub fn sys(context: impl Into<String>, errno: nix::errno::Errno) -> Self {
        Error::Io {
            context: context.into(),
            source: std::io::Error::from(errno),
        }
    }

    /// The wire kind, matched by clients instead of the text.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::InvalidRequest(_) => "InvalidRequest",
            Error::HandleExists(_) => "ResourceExists",
            Error::ContainerNotFound(_)
            | Error::ProcessNotFound { .. }
            | Error::PropertyNotFound { .. } => "ResourceNotFound",
            Error::PathEscape { .. } => "PathEscape",
            Error::ProcessStart { .. } => "ProcessStartFailed",
            Error::Remote { .. } => "Remote",
            Error::Transport(_) => "Transport",
            Error::Io { .. }
            | Error::Command { .. }
            | Error::Init { .. }
            | Error::Record { .. } => "Internal",
        }
    }
}
