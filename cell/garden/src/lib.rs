//! diego-garden: Diego's Garden, natively.
//!
//! Layers, lowest first (each knows nothing of the ones above):
//! - [`cgroups`]: cgroup v1 and v2 behind [`cgroups::CgroupManager`].
//! - [`spec`]: what a container gets, as an OCI runtime spec built once from its
//!   [`ContainerSpec`]; [`security`] applies its capabilities, seccomp profile and rlimits.
//! - [`container`]: namespaces, mounts and pivot_root, run by the `diego-garden-init` binary
//!   (its errors: [`init_error::InitError`]).
//! - [`disk`]: disk limits, a container's writable layer on an ext4 image of its own.
//! - [`rootfs`]: directory or OCI layers as overlayfs lower dirs.
//! - [`image`]: images from OCI registries: config for builders, layers into the cache.
//! - [`net`]: bridge, veth, NAT and port mappings.
//! - [`tarstream`]: tar in and out with escape checks.
//! - [`native`]: [`native::NativeBackend`], the [`Backend`] on this host.
//! - [`api`]: the Garden-style HTTP server over any [`Backend`]; [`client`]: the same
//!   operations over HTTP, itself a [`Backend`].

pub mod api;
pub mod backend;
pub mod cgroups;
pub mod client;
pub mod container;
pub mod disk;
pub mod error;
pub mod exec_server;
pub mod fake;
pub mod image;
pub mod init_error;
pub mod native;
pub mod net;
pub mod process;
pub mod rootfs;
pub mod security;
pub mod spec;
pub mod tarstream;
pub mod types;

pub use backend::{Backend, ByteStream, ProcessOutput, ProcessStream, byte_stream};
pub use error::{Error, Result};
pub use types::*;
