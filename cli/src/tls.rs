//! Mutual TLS for every role and command: the global `--tls-*` flags, which identity each role
//! presents, and `diego certs`, which makes a CA and the roles' certificates.

use std::path::PathBuf;

use anyhow::Context;
use diego_tls::certs;
use diego_tls::{Tls, TlsFiles};

/// The global flags; any of them turns mutual TLS on.
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    /// Mutual TLS with the certificates in DIR (as `diego certs` makes them: `ca.pem`,
    /// `NAME.pem`, `NAME-key.pem`). URLs without a scheme become https://.
    #[arg(long, global = true, env = "DIEGO_TLS_DIR", value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
    /// Which certificate in --tls-dir this process presents (default: the role's name —
    /// bbs, brain, cell, api, router — and `client` for commands).
    #[arg(long, global = true, env = "DIEGO_TLS_NAME", value_name = "NAME")]
    pub tls_name: Option<String>,
    /// The CA certificate(s) to trust (instead of --tls-dir's `ca.pem`).
    #[arg(long, global = true, env = "DIEGO_TLS_CA", value_name = "FILE")]
    pub tls_ca: Option<PathBuf>,
    /// This process's certificate (instead of --tls-dir's).
    #[arg(long, global = true, env = "DIEGO_TLS_CERT", value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// This process's private key (instead of --tls-dir's).
    #[arg(long, global = true, env = "DIEGO_TLS_KEY", value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
}

impl TlsArgs {
    /// Whether any flag turns mutual TLS on.
    pub fn enabled(&self) -> bool {
        self.tls_dir.is_some()
            || self.tls_ca.is_some()
            || self.tls_cert.is_some()
            || self.tls_key.is_some()
    }

    /// The files of identity `name` (unless `--tls-name` says another), or `None` with TLS off.
    pub fn files(&self, name: &str) -> anyhow::Result<Option<TlsFiles>> {
        if !self.enabled() {
            return Ok(None);
        }
        let name = self.tls_name.as_deref().unwrap_or(name);
        let from_dir = self.tls_dir.as_ref().map(|dir| TlsFiles::in_dir(dir, name));
        let pick = |given: &Option<PathBuf>, flag: &str, in_dir: Option<PathBuf>| {
            given.clone().or(in_dir).with_context(|| {
                format!("mutual TLS needs {flag} (or --tls-dir with the certificates)")
            })
        };
        Ok(Some(TlsFiles {
            ca: pick(
                &self.tls_ca,
                "--tls-ca",
                from_dir.as_ref().map(|f| f.ca.clone()),
            )?,
            cert: pick(
                &self.tls_cert,
                "--tls-cert",
                from_dir.as_ref().map(|f| f.cert.clone()),
            )?,
            key: pick(&self.tls_key, "--tls-key", from_dir.map(|f| f.key))?,
        }))
    }

    /// Identity `name` loaded (see [`TlsArgs::files`]), or `None` with TLS off.
    pub fn load(&self, name: &str) -> anyhow::Result<Option<Tls>> {
        let Some(files) = self.files(name)? else {
            return Ok(None);
        };
        let tls = Tls::load(&files).with_context(|| {
            format!(
                "cannot load the TLS identity {} (make it with `diego certs`)",
                files.cert.display()
            )
        })?;
        tracing::debug!(cert = %files.cert.display(), "mutual TLS on");
        Ok(Some(tls))
    }
}

/// `diego certs`.
#[derive(Debug, clap::Args)]
pub struct CertsArgs {
    /// Where to write `ca.pem`, `ca-key.pem` and `NAME.pem` / `NAME-key.pem` per role. A CA
    /// already there is kept (the roles' certificates are made anew: rotation).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Sign with the CA in this directory (`ca.pem`, `ca-key.pem`); only `ca.pem` is copied
    /// to --out, so the CA's key stays where it is.
    #[arg(long, value_name = "DIR", conflicts_with = "new_ca")]
    ca_dir: Option<PathBuf>,
    /// Make a new CA even if --out has one (every role then needs the new files).
    #[arg(long)]
    new_ca: bool,
    /// The DNS names and IP addresses the roles are reached at (every certificate names all
    /// of them).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "127.0.0.1,localhost,::1",
        value_name = "HOST,..."
    )]
    hosts: Vec<String>,
    /// The certificates to make.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "bbs,brain,cell,api,router,client",
        value_name = "NAME,..."
    )]
    names: Vec<String>,
    /// How long the roles' certificates are valid.
    #[arg(long, default_value_t = 365)]
    days: u64,
}

/// `diego certs`: makes (or keeps) the CA and makes the named certificates.
pub fn certs(args: CertsArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.days > 0, "--days must be at least 1");
    for name in &args.names {
        anyhow::ensure!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "--names: {name:?} is not a file name (letters, digits, - and _)"
        );
        anyhow::ensure!(name != "ca", "--names: `ca` is the CA's own file");
    }
    let plan = certs::Plan {
        ca_dir: args.ca_dir,
        new_ca: args.new_ca,
        names: args.names,
        valid_for: std::time::Duration::from_secs(args.days.saturating_mul(24 * 3600)),
        ..certs::Plan::new(&args.out, args.hosts.clone())
    };
    let made = certs::make(&plan)
        .with_context(|| format!("cannot make certificates in {}", args.out.display()))?;
    if made.new_ca {
        eprintln!("made a new CA in {}", args.out.display());
    } else {
        eprintln!("kept the CA of {}", args.out.display());
    }
    eprintln!(
        "made {} for {} (valid {} days); restart each role to use its new certificate",
        made.issued.join(", "),
        args.hosts.join(", "),
        args.days
    );
    println!("{}", args.out.display());
    Ok(())
}

/// Names of the certificates `diego dev --tls` uses: one per role, one per cell.
pub fn dev_names(cells: usize) -> Vec<String> {
    let mut names: Vec<String> = ["bbs", "brain", "api", "router", "client"]
        .iter()
        .map(|n| n.to_string())
        .collect();
    names.extend((0..cells).map(|i| format!("cell-{i}")));
    names
}

/// Makes what `diego dev --tls` needs in `dir` (a CA and certificates, kept across restarts;
/// missing ones are added) for roles at `hosts`, cell `i` also at `cell_ips[i]`.
pub fn dev_certs(
    dir: &std::path::Path,
    hosts: Vec<String>,
    cell_ips: &[String],
) -> anyhow::Result<()> {
    let plan = certs::Plan {
        names: dev_names(cell_ips.len()),
        extra_hosts: cell_ips
            .iter()
            .enumerate()
            .map(|(i, ip)| (format!("cell-{i}"), vec![ip.clone()]))
            .collect(),
        valid_for: certs::CA_VALIDITY,
        keep_existing: true,
        ..certs::Plan::new(dir, hosts)
    };
    let made = certs::make(&plan)
        .with_context(|| format!("cannot make diego dev's certificates in {}", dir.display()))?;
    if !made.issued.is_empty() {
        tracing::info!(dir = %dir.display(), made = %made.issued.join(","), "TLS certificates made");
    }
    Ok(())
}

/// The identity the commands of this invocation present (`client`, unless `--tls-name` says
/// another). Set once in `main` before the command runs, as the log subscriber is; the roles
/// get theirs passed explicitly.
static COMMAND_IDENTITY: std::sync::OnceLock<Option<Tls>> = std::sync::OnceLock::new();

pub fn set_command_identity(tls: Option<Tls>) {
    let _ = COMMAND_IDENTITY.set(tls);
}

/// See [`set_command_identity`]; `None` with TLS off.
pub fn command_identity() -> Option<&'static Tls> {
    COMMAND_IDENTITY.get().and_then(Option::as_ref)
}
