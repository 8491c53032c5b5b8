//! A real OCI registry for tests, and test images pushed to it.
//!
//! [`Registry`] runs Debian's `docker-registry serve CONFIG` (apt `docker-registry`, the CNCF
//! distribution registry) on a free loopback port with filesystem storage in a temporary
//! directory, waits until `GET /v2/` answers 200, and kills it when dropped (a watchdog `sh`
//! kills it too if the test process dies first). Its access log is kept, so tests can count
//! blob downloads ([`Registry::blob_gets`]).
//!
//! [`push_test_image`] builds an OCI image with `umoci` (apt `umoci`): a busybox-static base
//! layer, one more layer per [`ImageSpec::layers`] entry, then the config (entrypoint, cmd, env,
//! user, working dir, exposed ports), and pushes it with `skopeo copy` (apt `skopeo`).
//!
//! Like [`crate::EtcdServer`], everything here blocks; call it from `spawn_blocking` in async
//! code that must keep running meanwhile.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use tempfile::TempDir;

use crate::Result;
use crate::etcd::free_port;

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// `name` on `PATH`, or an error naming the apt package to install.
fn tool(name: &str, package: &str) -> Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            anyhow!("{name} not found: install it (Debian: `apt-get install {package}`)")
        })
}

/// `Ok` when `docker-registry`, `umoci`, `skopeo` and a static `busybox` are installed; else
/// which one is missing and how to install it.
pub fn registry_tools() -> Result<()> {
    tool("docker-registry", "docker-registry")?;
    tool("umoci", "umoci")?;
    tool("skopeo", "skopeo")?;
    tool("busybox", "busybox-static")?;
    Ok(())
}

/// A `docker-registry` process on 127.0.0.1 with its storage in a temporary directory.
#[derive(Debug)]
pub struct Registry {
    child: Option<Child>,
    watchdog: Option<Child>,
    port: u16,
    dir: TempDir,
}

impl Registry {
    /// Starts a registry and waits until `/v2/` answers.
    pub fn start() -> Result<Registry> {
        let bin = tool("docker-registry", "docker-registry")?;
        let dir = tempfile::Builder::new()
            .prefix("diego-registry-")
            .tempdir()
            .context("creating a temp dir for the registry")?;
        let port = free_port();
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage)?;
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                storage.display()
            ),
        )?;
        let log_path = dir.path().join("registry.log");
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let child = Command::new(&bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("spawning {}", bin.display()))?;
        let watchdog = Command::new("sh")
            .args([
                "-c",
                "read -r line; kill -9 \"$1\" 2>/dev/null",
                "registry-watchdog",
            ])
            .arg(child.id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| tracing::warn!("no watchdog for the registry: {e}"))
            .ok();
        let mut registry = Registry {
            child: Some(child),
            watchdog,
            port,
            dir,
        };
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(child) = registry.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("docker-registry exited ({status}):\n{}", registry.log());
            }
            if http_status(port, "/v2/").is_ok_and(|code| code == 200) {
                break;
            }
            if Instant::now() >= deadline {
                bail!("docker-registry did not answer /v2/:\n{}", registry.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        tracing::debug!(port, "registry up");
        Ok(registry)
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:PORT`, the registry part of image references.
    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// The registry's storage root (`docker/registry/v2/…` below it).
    pub fn storage_dir(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    /// Where the registry keeps the blob `sha256:HEX`.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf> {
        let hex = digest
            .strip_prefix("sha256:")
            .filter(|h| h.len() == 64)
            .ok_or_else(|| anyhow!("bad digest {digest}"))?;
        Ok(self
            .storage_dir()
            .join("docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data"))
    }

    /// The registry's log so far (application and access log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("registry.log")).unwrap_or_default()
    }

    /// How many `GET …/blobs/DIGEST` the registry has answered (any repository, any status).
    pub fn blob_gets(&self, digest: &str) -> usize {
        let needle = format!("/blobs/{digest} HTTP/");
        self.log()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains(&needle))
            .count()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            let _ = w.kill();
            let _ = w.wait();
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET path` on 127.0.0.1:`port` (HTTP/1.0); the status code.
fn http_status(port: u16, path: &str) -> Result<u16> {
    let timeout = Duration::from_secs(1);
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((Ipv4Addr::LOCALHOST, port)), timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow!("malformed HTTP response"))
}

/// A file of a test image layer.
#[derive(Debug, Clone)]
pub struct ImageFile {
    /// Path inside the image (leading `/` optional).
    pub path: String,
    /// Contents.
    pub contents: Vec<u8>,
    /// Permission bits (e.g. 0o644, 0o755).
    pub mode: u32,
}

impl ImageFile {
    /// A file with mode 0644.
    pub fn new(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        ImageFile {
            path: path.into(),
            contents: contents.into(),
            mode: 0o644,
        }
    }

    /// An executable file (0755).
    pub fn executable(path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        ImageFile {
            mode: 0o755,
            ..ImageFile::new(path, contents)
        }
    }
}

/// What [`push_test_image`] builds: a busybox base layer (with `/etc/passwd` naming root,
/// `vcap` (2000) and nobody), one layer per entry of `layers`, and this config.
#[derive(Debug, Clone, Default)]
pub struct ImageSpec {
    /// Layers above the base, bottom first.
    pub layers: Vec<Vec<ImageFile>>,
    /// `Entrypoint`.
    pub entrypoint: Vec<String>,
    /// `Cmd`.
    pub cmd: Vec<String>,
    /// `Env` (`KEY=VALUE`).
    pub env: Vec<String>,
    /// `User`.
    pub user: Option<String>,
    /// `WorkingDir`.
    pub workdir: Option<String>,
    /// `ExposedPorts` (`8080/tcp`).
    pub exposed_ports: Vec<String>,
}

impl ImageSpec {
    /// A web app image: busybox `httpd` serving `page` as `/www/index.html` on port 8080 (its
    /// own entrypoint and command, `8080/tcp` exposed), as `vcap`, in `/www`. Tests set `env`
    /// or `user` on top.
    pub fn httpd(page: &str) -> ImageSpec {
        ImageSpec {
            layers: vec![vec![ImageFile::new("www/index.html", page)]],
            entrypoint: vec!["/bin/httpd".into()],
            cmd: ["-f", "-p", "8080", "-h", "/www"]
                .map(String::from)
                .to_vec(),
            env: Vec::new(),
            user: Some("vcap".into()),
            workdir: Some("/www".into()),
            exposed_ports: vec!["8080/tcp".into()],
        }
    }
}

/// What was pushed.
#[derive(Debug, Clone)]
pub struct PushedImage {
    /// `docker://127.0.0.1:PORT/NAME:TAG`.
    pub reference: String,
    /// The manifest's digest.
    pub manifest_digest: String,
    /// The config blob's digest.
    pub config_digest: String,
    /// Layer digests, bottom (busybox) first.
    pub layers: Vec<String>,
}

fn run(command: &mut Command) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    if !out.status.success() {
        bail!(
            "{command:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn write_files(root: &Path, files: &[ImageFile]) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    for f in files {
        let rel = f.path.trim_start_matches('/');
        if rel.is_empty() || rel.split('/').any(|c| c == "..") {
            bail!("bad image file path {}", f.path);
        }
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, &f.contents)
            .with_context(|| format!("writing {}", path.display()))?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(f.mode))?;
    }
    Ok(())
}

/// The busybox base: `/bin/busybox` and a link per applet, `/etc/passwd`, `/etc/group`.
fn base_rootfs(root: &Path) -> Result<()> {
    let busybox = tool("busybox", "busybox-static")?;
    let bin = root.join("bin");
    std::fs::create_dir_all(&bin)?;
    std::fs::copy(&busybox, bin.join("busybox"))?;
    let list = Command::new(&busybox).arg("--list").output()?;
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet == "busybox" || applet.contains('/') {
            continue;
        }
        std::os::unix::fs::symlink("busybox", bin.join(applet))?;
    }
    for d in ["etc", "proc", "sys", "dev", "tmp", "root", "home/vcap"] {
        std::fs::create_dir_all(root.join(d))?;
    }
    write_files(
        root,
        &[
            ImageFile::new(
                "etc/passwd",
                "root:x:0:0:root:/root:/bin/sh\nvcap:x:2000:2000::/home/vcap:/bin/sh\n\
                 nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
            ),
            ImageFile::new("etc/group", "root:x:0:\nvcap:x:2000:\nnogroup:x:65534:\n"),
        ],
    )
}

/// Builds `spec` with umoci and pushes it to `registry` as `NAME:TAG` with skopeo.
pub fn push_test_image(
    registry: &Registry,
    name: &str,
    tag: &str,
    spec: &ImageSpec,
) -> Result<PushedImage> {
    let umoci = tool("umoci", "umoci")?;
    let skopeo = tool("skopeo", "skopeo")?;
    let work = tempfile::Builder::new()
        .prefix("diego-image-")
        .tempdir()
        .context("creating a temp dir for an image")?;
    let layout = work.path().join("layout");
    let image = format!("{}:{tag}", layout.display());
    run(Command::new(&umoci).args(["init", "--layout"]).arg(&layout))?;
    run(Command::new(&umoci).args(["new", "--image", &image]))?;
    let rootless = !is_root();
    let layers: Vec<&[ImageFile]> = std::iter::once(&[][..])
        .chain(spec.layers.iter().map(Vec::as_slice))
        .collect();
    for (i, files) in layers.into_iter().enumerate() {
        // a fresh bundle per layer: umoci repack diffs the bundle against its unpack
        let bundle = work.path().join(format!("bundle{i}"));
        let mut unpack = Command::new(&umoci);
        unpack.arg("unpack");
        if rootless {
            unpack.arg("--rootless");
        }
        run(unpack.args(["--image", &image]).arg(&bundle))?;
        let root = bundle.join("rootfs");
        if i == 0 {
            base_rootfs(&root)?;
        } else {
            write_files(&root, files)?;
        }
        run(Command::new(&umoci)
            .args(["repack", "--image", &image])
            .arg(&bundle))?;
    }
    let mut config = Command::new(&umoci);
    config.args(["config", "--image", &image]);
    // a new umoci image has no entrypoint or cmd; repeated flags make the list
    for a in &spec.entrypoint {
        config.arg(format!("--config.entrypoint={a}"));
    }
    for a in &spec.cmd {
        config.arg(format!("--config.cmd={a}"));
    }
    for e in &spec.env {
        config.arg(format!("--config.env={e}"));
    }
    if let Some(u) = &spec.user {
        config.arg(format!("--config.user={u}"));
    }
    if let Some(w) = &spec.workdir {
        config.arg(format!("--config.workingdir={w}"));
    }
    for p in &spec.exposed_ports {
        config.arg(format!("--config.exposedports={p}"));
    }
    run(&mut config)?;
    run(Command::new(&umoci).args(["gc", "--layout"]).arg(&layout))?;
    let dest = format!("docker://{}/{name}:{tag}", registry.host());
    run(Command::new(&skopeo)
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci:{image}"))
        .arg(&dest))?;

    // what was pushed, from the layout (skopeo keeps OCI manifests and digests as they are)
    let read_json = |path: PathBuf| -> Result<serde_json::Value> {
        let raw = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Ok(serde_json::from_slice(&raw)?)
    };
    let blob = |digest: &str| {
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:"))
    };
    let index = read_json(layout.join("index.json"))?;
    let manifest_digest = index["manifests"]
        .as_array()
        .and_then(|m| {
            m.iter().find(|d| {
                d["annotations"]["org.opencontainers.image.ref.name"].as_str() == Some(tag)
            })
        })
        .and_then(|d| d["digest"].as_str())
        .ok_or_else(|| anyhow!("no manifest {tag} in {}", layout.display()))?
        .to_string();
    let manifest = read_json(blob(&manifest_digest))?;
    let config_digest = manifest["config"]["digest"]
        .as_str()
        .ok_or_else(|| anyhow!("manifest without config"))?
        .to_string();
    let layers = manifest["layers"]
        .as_array()
        .map(|ls| {
            ls.iter()
                .filter_map(|l| l["digest"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(PushedImage {
        reference: dest,
        manifest_digest,
        config_digest,
        layers,
    })
}

/// Copies `NAME:FROM` to `NAME:TO` in `registry` converted to a Docker v2 schema 2 image
/// (`skopeo copy --format v2s2`: Docker media types, same layer blobs); its reference.
pub fn copy_as_docker_v2s2(
    registry: &Registry,
    name: &str,
    from: &str,
    to: &str,
) -> Result<String> {
    let skopeo = tool("skopeo", "skopeo")?;
    let src = format!("docker://{}/{name}:{from}", registry.host());
    let dest = format!("docker://{}/{name}:{to}", registry.host());
    run(Command::new(&skopeo)
        .args(["copy", "--quiet", "--format", "v2s2"])
        .args(["--src-tls-verify=false", "--dest-tls-verify=false"])
        .arg(&src)
        .arg(&dest))?;
    Ok(dest)
}
