//! `diego cell`: one cell — the rep, the executor and the container backend — and what a cell
//! needs from this binary: the container init helper, and the stack root filesystem `diego dev`
//! makes.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;

/// The name diego-garden starts its init helper by. When this binary is started under that
/// name it is the helper (see [`run_as_init_helper`]).
const INIT_HELPER_NAME: &str = "diego-garden-init";

/// If this process was started as diego-garden's init helper, runs it and returns its exit
/// status; otherwise `None`. Call first thing in `main`, before any thread exists.
pub fn run_as_init_helper() -> Option<ExitCode> {
    let mut args = std::env::args_os();
    let argv0 = PathBuf::from(args.next()?);
    if argv0.file_name()? != INIT_HELPER_NAME {
        return None;
    }
    let args: Vec<String> = args.map(|a| a.to_string_lossy().into_owned()).collect();
    let code = match (args.first().map(String::as_str), args.get(1)) {
        (Some("init"), Some(config)) => diego_garden::container::shim_main(config),
        (Some("exec"), Some(spec)) => diego_garden::container::exec_main(spec),
        (Some("-h" | "--help"), _) => {
            println!("usage: {INIT_HELPER_NAME} init <json> | exec <json>  (started by a cell)");
            0
        }
        _ => {
            eprintln!("usage: {INIT_HELPER_NAME} init <json> | exec <json>");
            2
        }
    };
    // The helper's status is the container's or the process's; it fits a u8 by contract.
    Some(ExitCode::from(
        u8::try_from(code.clamp(0, 255)).unwrap_or(1),
    ))
}

/// A `diego-garden-init` link to this binary under `dir`, made if missing.
pub fn init_helper(dir: &Path) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot find the diego binary's own path")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let link = dir.join(INIT_HELPER_NAME);
    match std::fs::read_link(&link) {
        Ok(target) if target == exe => return Ok(link),
        Ok(_) => std::fs::remove_file(&link)
            .with_context(|| format!("cannot replace the stale link {}", link.display()))?,
        Err(_) if link.exists() => std::fs::remove_file(&link)
            .with_context(|| format!("cannot replace {}", link.display()))?,
        Err(_) => {}
    }
    std::os::unix::fs::symlink(&exe, &link)
        .with_context(|| format!("cannot link {} to {}", link.display(), exe.display()))?;
    Ok(link)
}

/// The script that makes the stack root filesystem (Debian with bash, coreutils, curl and
/// python3), shipped inside the binary so `diego dev` works from anywhere.
const MAKE_STACK_ROOTFS: &str = include_str!("../../cell/garden/scripts/make-stack-rootfs.sh");

/// Makes (first run: debootstrap, a few minutes, its progress on stderr) or finds (cached) the
/// stack rootfs that `preloaded:cflinuxfs4` names in `diego dev`.
pub async fn stack_rootfs() -> anyhow::Result<PathBuf> {
    let script = tempfile::Builder::new()
        .prefix("make-stack-rootfs")
        .suffix(".sh")
        .tempfile()
        .context("cannot write the rootfs script to a temp file")?;
    std::fs::write(script.path(), MAKE_STACK_ROOTFS).context("cannot write the rootfs script")?;
    let out = tokio::process::Command::new("bash")
        .arg(script.path())
        .stderr(std::process::Stdio::inherit())
        .output()
        .await
        .context("cannot run bash to make the stack rootfs")?;
    anyhow::ensure!(
        out.status.success(),
        "making the stack rootfs failed ({}); see the messages above",
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let dir = stdout.lines().last().unwrap_or_default().trim();
    anyhow::ensure!(
        !dir.is_empty() && Path::new(dir).is_dir(),
        "the stack rootfs script printed no directory"
    );
    Ok(PathBuf::from(dir))
}

/// `diego cell`: one cell.
#[derive(Debug, clap::Args)]
pub struct CellArgs {
    /// This cell's id: its presence key, unique in the cluster.
    #[arg(long)]
    pub cell_id: String,
    /// Where the rep's API listens; its IP is the address instances are reached at. Cells
    /// sharing a machine listen on distinct 127.0.0.x addresses (each gets its own bridge,
    /// subnet and host-port range from it).
    #[arg(long, default_value = "127.0.0.1:1800")]
    pub listen: std::net::SocketAddr,
    #[arg(long, default_value = "z1")]
    pub zone: String,
    /// Where the cell keeps its containers and caches.
    #[arg(long, default_value = "/var/lib/diego/cell")]
    pub data_dir: PathBuf,
    #[arg(long, default_value_t = 4096)]
    pub memory_mb: i32,
    #[arg(long, default_value_t = 16384)]
    pub disk_mb: i32,
    #[arg(long, default_value_t = 250)]
    pub max_containers: i32,
    /// A preloaded root filesystem, NAME=DIR: serves LRPs and tasks whose rootfs is
    /// `preloaded:NAME`. Repeat for several. (`docker://` images are always served.)
    #[arg(long = "rootfs", value_parser = parse_rootfs)]
    pub rootfs: Vec<(String, PathBuf)>,
    /// A placement tag work must ask for to land here. Repeatable.
    #[arg(long = "placement-tag")]
    pub placement_tags: Vec<String>,
    /// A placement tag work may ask for. Repeatable.
    #[arg(long = "optional-placement-tag")]
    pub optional_placement_tags: Vec<String>,
    /// The presence lease (Diego: 15 s). A cell that stops renewing is lost after this long.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub presence_ttl: Duration,
    /// Full reconciliation of containers with the BBS (Diego: 30 s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub sync_interval: Duration,
    /// Liveness checks of running instances (Diego: 30 s).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub liveness_interval: Duration,
    /// How long a drain waits for replacements and tasks (Diego: 600 s).
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    pub evacuation_timeout: Duration,
    /// Destroy every container this cell left behind and exit (after a crash of the cell).
    #[arg(long)]
    pub cleanup: bool,
    /// Where apps', staging's and the cell's log lines go (an apps API's URL); none: not sent.
    #[arg(long, env = "DIEGO_LOGS_URL")]
    pub logs_url: Option<String>,
    /// The secret the ssh proxy presents to open SSH sessions in this cell's instances (the
    /// proxy's --ssh-secret); none: SSH sessions are refused.
    #[arg(long, env = "DIEGO_SSH_SECRET", hide_env_values = true)]
    pub ssh_secret: Option<String>,
}

pub fn parse_rootfs(s: &str) -> Result<(String, PathBuf), String> {
    let (name, dir) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=DIR, got {s:?}"))?;
    if name.is_empty() || dir.is_empty() {
        return Err(format!("expected NAME=DIR, got {s:?}"));
    }
    Ok((name.to_string(), PathBuf::from(dir)))
}

/// `500ms`, `15s`, `2m`, or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (e.g. 500ms, 15s, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit in {s:?} (ms, s, m, h)")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("not a duration: {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

impl CellArgs {
    /// The rep's settings; with `tls`, its API serves mutual TLS and it presents `tls` to the
    /// BBS, the log server and the blob store.
    pub fn rep_config(
        &self,
        bbs_url: &str,
        tls: Option<diego_tls::Tls>,
    ) -> anyhow::Result<diego_rep::Config> {
        for (name, dir) in &self.rootfs {
            anyhow::ensure!(
                dir.is_dir(),
                "--rootfs {name}={}: no such directory",
                dir.display()
            );
        }
        let mut config = diego_rep::Config {
            cell_id: self.cell_id.clone(),
            listen: self.listen,
            zone: self.zone.clone(),
            data_dir: self.data_dir.clone(),
            memory_mb: self.memory_mb,
            disk_mb: self.disk_mb,
            max_containers: self.max_containers,
            preloaded_rootfses: self.rootfs.iter().cloned().collect(),
            placement_tags: self.placement_tags.clone(),
            optional_placement_tags: self.optional_placement_tags.clone(),
            presence_ttl: self.presence_ttl,
            sync_interval: self.sync_interval,
            liveness_interval: self.liveness_interval,
            evacuation_timeout: self.evacuation_timeout,
            bbs_url: bbs_url.to_string(),
            logs_url: self
                .logs_url
                .as_deref()
                .map(|url| diego_tls::with_scheme(url, tls.as_ref())),
            tls,
            ssh_secret: self.ssh_secret.clone(),
            ..diego_rep::Config::default()
        };
        config.garden.init_bin = Some(init_helper(&self.data_dir.join("bin"))?);
        Ok(config)
    }
}

/// Runs `diego cell` until SIGTERM (then evacuates) or a drain finishes.
pub async fn run(bbs_url: &str, args: CellArgs, tls: Option<diego_tls::Tls>) -> anyhow::Result<()> {
    let config = args.rep_config(bbs_url, tls)?;
    if args.cleanup {
        return cleanup(&config).await;
    }
    anyhow::ensure!(
        nix_is_root(),
        "a cell runs containers and needs root (namespaces, cgroups, iptables)"
    );
    let cell_id = config.cell_id.clone();
    diego_rep::run(config, crate::roles::shutdown_on_signal())
        .await
        .with_context(|| format!("cell {cell_id} stopped"))
}

/// Destroys every container in the cell's depot.
async fn cleanup(config: &diego_rep::Config) -> anyhow::Result<()> {
    use diego_garden::Backend;
    let backend = diego_garden::native::NativeBackend::new(config.native_config())
        .await
        .context("cannot open the cell's container depot")?;
    let handles = backend
        .list(&Default::default())
        .await
        .context("cannot list the cell's containers")?;
    for handle in &handles {
        if let Err(e) = backend.destroy(handle).await {
            eprintln!("cannot destroy container {handle}: {e}");
        }
    }
    eprintln!(
        "destroyed {} container(s) of {}",
        handles.len(),
        config.cell_id
    );
    Ok(())
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("15s"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("3d").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn rootfs_flags_are_name_equals_dir() {
        assert_eq!(
            parse_rootfs("cflinuxfs4=/srv/stack"),
            Ok(("cflinuxfs4".to_string(), PathBuf::from("/srv/stack")))
        );
        assert!(parse_rootfs("cflinuxfs4").is_err());
        assert!(parse_rootfs("=/srv").is_err());
    }
}
