//! Disk limits: a container with `Limits::disk_mb` gets its writable layer (the overlay's
//! upper and work dirs) on a file system of its own, a sparse ext4 image in its depot directory
//! on a loop device.
//!
//! Why an image and not quotas: the depot's file system here (ext4 without the `quota`
//! feature, mounted without `usrquota`/`prjquota`) cannot enforce per-directory limits, and
//! turning project quotas on needs `tune2fs -O quota,project` on an unmounted file system,
//! which a cell cannot ask of its host. An image works on any host with loop devices, a write
//! past the limit fails with ENOSPC like on a full disk, and its usage is one `statfs`.
//!
//! Life cycle, without any in-memory state:
//! * create (server): [`make_image`] — a sparse file and `mkfs.ext4` (no journal: the layer
//!   dies with the container; lazy inode tables; ~8 ms, 656 KiB allocated for 1 GiB).
//! * pid 1, still host root, in the container's mount namespace: [`attach`] binds the image
//!   to a free loop device with `LO_FLAGS_AUTOCLEAR` and mounts it there only. The host's
//!   mount table never changes; the mount is the loop device's only user.
//! * destroy: when the container's last process exits its mount namespace goes, the ext4
//!   mount with it, and the kernel detaches the loop device itself (autoclear), even if the
//!   server is dead. [`wait_detached`] waits for that (found by the image's path, which
//!   names the handle) and detaches by force what is left before the image is deleted.

use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

const MIB: u64 = 1 << 20;

// <linux/loop.h>; not in the libc crate
const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LOOP_CLR_FD: libc::c_ulong = 0x4C01;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
}

/// `struct loop_config` (`LOOP_CONFIGURE`, Linux 5.8+: one ioctl instead of SET_FD+SET_STATUS).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Size of the image for a limit of `mb` MiB: ext4's own overhead (inode tables, bitmaps,
/// the clusters it keeps back against ENOSPC) is ~3.5%, so the image is that much larger and
/// what the container can write is `mb` MiB give or take one (measured: 16, 64, 1024, 4096).
pub fn image_bytes(mb: u64) -> u64 {
    let bytes = mb * MIB + mb * MIB * 35 / 1000 + MIB;
    // loop devices ignore a partial 512-byte sector; keep whole 4 KiB blocks
    bytes.div_ceil(4096) * 4096
}

fn mkfs_program() -> PathBuf {
    // a server started without sbin in its PATH still finds it
    ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from("mkfs.ext4"))
}

/// Makes the sparse ext4 image `path` for a limit of `mb` MiB.
pub async fn make_image(path: &Path, mb: u64) -> Result<()> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Error::io(format!("create {}", path.display()), e))?;
    file.set_len(image_bytes(mb))
        .map_err(|e| Error::io(format!("size {}", path.display()), e))?;
    drop(file);
    let prog = mkfs_program();
    let out = tokio::process::Command::new(&prog)
        // 4 KiB blocks whatever the size (mke2fs picks 1 KiB for small ones: slower, more
        // overhead); no journal and no reserved blocks: the layer dies with the container;
        // lazy inode tables and no discard: only metadata is written (656 KiB for 1 GiB)
        .args(["-q", "-F", "-b", "4096", "-T", "default", "-m", "0"])
        .args(["-O", "^has_journal", "-E", "nodiscard,lazy_itable_init=1"])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| {
            Error::io(
                format!("run {} (apt-get install e2fsprogs)", prog.display()),
                e,
            )
        })?;
    if !out.status.success() {
        return Err(Error::Command {
            command: format!("{} {}", prog.display(), path.display()),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(())
}

fn ioctl_err(what: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(what, e)
}

/// Binds `image` to a free loop device that detaches itself once nothing uses it; returns the
/// open device (keep it until the file system is mounted) and its path.
pub fn attach(image: &Path) -> Result<(OwnedFd, PathBuf)> {
    let backing = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image)
        .map_err(|e| Error::io(format!("open {}", image.display()), e))?;
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/loop-control")
        .map_err(|e| Error::io("open /dev/loop-control", e))?;
    // another container may take the same free device between GET_FREE and CONFIGURE: EBUSY,
    // ask again
    for _ in 0..64 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Error::io(
                "find a free loop device",
                std::io::Error::last_os_error(),
            ));
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let loopdev = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&dev)
            .map_err(|e| Error::io(format!("open {}", dev.display()), e))?;
        let mut cfg = LoopConfig {
            fd: u32::try_from(backing.as_raw_fd()).unwrap_or(u32::MAX),
            block_size: 0,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: LO_FLAGS_AUTOCLEAR,
                lo_file_name: [0; 64],
                lo_crypt_name: [0; 64],
                lo_encrypt_key: [0; 32],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        };
        let name = image.as_os_str().as_encoded_bytes();
        let len = name.len().min(63);
        cfg.info.lo_file_name[..len].copy_from_slice(&name[..len]);
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, laid out as the kernel's and
        // alive across the call; `backing` stays open during it.
        let rc = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
        if rc == 0 {
            return Ok((OwnedFd::from(loopdev), dev));
        }
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(ioctl_err(format!(
                "attach {} to {}",
                image.display(),
                dev.display()
            ))(e));
        }
    }
    Err(Error::io(
        format!("attach {}", image.display()),
        std::io::Error::from_raw_os_error(libc::EBUSY),
    ))
}

/// Loop devices (`loopN`) whose backing file is `image` (also once it is deleted).
pub fn loops_backed_by(image: &Path) -> Vec<String> {
    let want = image.as_os_str().as_encoded_bytes();
    let Ok(rd) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            if !name.starts_with("loop") {
                return None;
            }
            let backing = std::fs::read(e.path().join("loop/backing_file")).ok()?;
            let backing = backing.strip_suffix(b"\n").unwrap_or(&backing);
            let backing = backing.strip_suffix(b" (deleted)").unwrap_or(backing);
            (backing == want).then_some(name)
        })
        .collect()
}

/// Waits (up to `timeout`) until no loop device is backed by `image`, then detaches what is
/// left (a device whose file system is still mounted somewhere only gets autoclear). Returns
/// the devices that had to be detached by force.
pub async fn wait_detached(image: &Path, timeout: Duration) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = loops_backed_by(image);
        if left.is_empty() {
            return left;
        }
        if tokio::time::Instant::now() >= deadline {
            for dev in &left {
                if let Ok(f) = File::open(format!("/dev/{dev}")) {
                    // SAFETY: LOOP_CLR_FD takes no argument.
                    unsafe { libc::ioctl(f.as_raw_fd(), LOOP_CLR_FD) };
                }
            }
            return left;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Bytes in use on the file system holding `path` (an overlay reports its upper file system).
pub fn used_bytes(path: &Path) -> Result<u64> {
    let st = nix::sys::statfs::statfs(path)
        .map_err(|e| Error::sys(format!("statfs {}", path.display()), e))?;
    let blocks = st.blocks().saturating_sub(st.blocks_free());
    Ok(blocks * u64::try_from(st.block_size()).unwrap_or(4096))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_cover_ext4_overhead_in_whole_blocks() {
        for mb in [1, 16, 1024, 4096] {
            let b = image_bytes(mb);
            assert_eq!(b % 4096, 0);
            assert!(b > mb * MIB + mb * MIB / 40, "{mb}: {b}");
            assert!(b < mb * MIB + mb * MIB / 20 + 2 * MIB, "{mb}: {b}");
        }
    }

    #[test]
    fn loop_config_has_the_kernels_layout() {
        assert_eq!(std::mem::size_of::<LoopInfo64>(), 232);
        assert_eq!(std::mem::size_of::<LoopConfig>(), 304);
    }
}
