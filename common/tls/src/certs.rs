//! The platform's certificates: one CA, and per part a certificate good for both serving and
//! calling (every part is both), with the hosts and addresses it is reached at.
//!
//! A directory holds `ca.pem` (and `ca-key.pem` where certificates are made), and
//! `NAME.pem` / `NAME-key.pem` per part. Keys are written owner-only, every file is replaced
//! whole (written aside, then renamed), so a part restarting meanwhile never reads half a file.
//!
//! Rotation: [`make`] again with the same CA gives new leaf certificates every part trusts at
//! once (restart each part to pick its own up); `new_ca` makes a new CA and new leaves for
//! everyone. A `ca.pem` may hold several CA certificates (old and new during a CA rotation).

use std::path::{Path, PathBuf};
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};

use crate::TlsError;

/// The CA certificate(s) every part trusts.
pub const CA_CERT: &str = "ca.pem";
/// The CA's private key: only where certificates are made.
pub const CA_KEY: &str = "ca-key.pem";
/// The parts `diego certs` makes a certificate for by default; `client` is the operator's and
/// the CLI's.
pub const NAMES: [&str; 6] = ["bbs", "brain", "cell", "api", "router", "client"];
/// Validity of a CA made here.
pub const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Default validity of a part's certificate.
pub const LEAF_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// Certificates start to be valid this long before they are made, for clocks a little behind.
const BACKDATE: Duration = Duration::from_secs(3600);

/// `NAME.pem`.
pub fn cert_file(name: &str) -> String {
    format!("{name}.pem")
}

/// `NAME-key.pem`.
pub fn key_file(name: &str) -> String {
    format!("{name}-key.pem")
}

fn generate(name: &str, e: impl std::fmt::Display) -> TlsError {
    TlsError::Generate {
        name: name.to_string(),
        message: e.to_string(),
    }
}

fn validity(params: &mut CertificateParams, valid_for: Duration) {
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + valid_for;
}

/// A CA that signs the parts' certificates.
pub struct Authority {
    cert_pem: String,
    key_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority").finish_non_exhaustive()
    }
}

/// A part's certificate and key, PEM.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Authority {
    /// A new CA (ECDSA P-256), valid for `valid_for`.
    pub fn generate(valid_for: Duration) -> Result<Authority, TlsError> {
        let key = KeyPair::generate().map_err(|e| generate("ca", e))?;
        let mut params = CertificateParams::default();
        let mut name = DistinguishedName::new();
        name.push(DnType::OrganizationName, "diego");
        // Distinct names per CA, so a certificate from another platform's CA is refused as
        // "unknown CA" rather than as a bad signature under a CA of the same name.
        let id: String = key
            .public_key_raw()
            .iter()
            .skip(1)
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect();
        name.push(DnType::CommonName, format!("diego platform CA {id}"));
        params.distinguished_name = name;
        // It signs the parts' certificates only, no intermediate CAs.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        validity(&mut params, valid_for);
        let cert = params.self_signed(&key).map_err(|e| generate("ca", e))?;
        let key_pem = key.serialize_pem();
        Ok(Authority {
            cert_pem: cert.pem(),
            key_pem,
            issuer: Issuer::new(params, key),
        })
    }

    /// A CA from its certificate and key (PEM).
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Authority, TlsError> {
        let key = KeyPair::from_pem(key_pem)
            .map_err(|e| crate::invalid("the CA key", format!("not a usable key ({e})")))?;
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key)
            .map_err(|e| crate::invalid("the CA certificate", format!("not a usable CA ({e})")))?;
        Ok(Authority {
            cert_pem: cert_pem.to_string(),
            key_pem: key_pem.to_string(),
            issuer,
        })
    }

    /// The CA in `dir` (`ca.pem` and `ca-key.pem`).
    pub fn load(dir: &Path) -> Result<Authority, TlsError> {
        let text = |file: &str| {
            let path = dir.join(file);
            std::fs::read_to_string(&path).map_err(|source| TlsError::Read { path, source })
        };
        let (cert, key) = (text(CA_CERT)?, text(CA_KEY)?);
        Self::from_pem(&cert, &key).map_err(|e| match e {
            TlsError::Invalid { what, message } => TlsError::Invalid {
                what: format!("{what} in {}", dir.display()),
                message,
            },
            other => other,
        })
    }

    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// A certificate for part `name`, for serving (at `hosts`: DNS names or IP addresses) and
    /// for calling other parts, valid for `valid_for`.
    pub fn issue(
        &self,
        name: &str,
        hosts: &[String],
        valid_for: Duration,
    ) -> Result<Leaf, TlsError> {
        let key = KeyPair::generate().map_err(|e| generate(name, e))?;
        let mut params = CertificateParams::new(hosts.to_vec()).map_err(|e| generate(name, e))?;
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "diego");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        validity(&mut params, valid_for);
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| generate(name, e))?;
        Ok(Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        })
    }
}

/// What [`make`] should do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Where the certificates go.
    pub out: PathBuf,
    /// Sign with the CA in this directory (`ca.pem`, `ca-key.pem`) instead of the one in
    /// `out`; only its certificate is copied to `out`.
    pub ca_dir: Option<PathBuf>,
    /// Make a new CA even if `out` has one (rotating the CA: every part needs new files).
    pub new_ca: bool,
    /// The parts to make certificates for.
    pub names: Vec<String>,
    /// Extra hosts of one part (e.g. a cell's own address), besides `hosts`.
    pub extra_hosts: Vec<(String, Vec<String>)>,
    /// DNS names and IP addresses every part's certificate names.
    pub hosts: Vec<String>,
    pub valid_for: Duration,
    /// Keep a part's certificate that is already there (`diego dev`); else every named part
    /// gets a new one (rotation).
    pub keep_existing: bool,
}

impl Plan {
    /// Certificates for [`NAMES`] at `hosts` in `out`, with the CA kept if there is one.
    pub fn new(out: impl Into<PathBuf>, hosts: Vec<String>) -> Plan {
        Plan {
            out: out.into(),
            ca_dir: None,
            new_ca: false,
            names: NAMES.iter().map(|n| n.to_string()).collect(),
            extra_hosts: Vec::new(),
            hosts,
            valid_for: LEAF_VALIDITY,
            keep_existing: false,
        }
    }
}

/// What [`make`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Made {
    /// A new CA was made (every part must get new files).
    pub new_ca: bool,
    /// Parts given a new certificate.
    pub issued: Vec<String>,
    /// Parts whose certificate was kept.
    pub kept: Vec<String>,
}

/// Makes (or keeps) the CA and the parts' certificates as `plan` says.
pub fn make(plan: &Plan) -> Result<Made, TlsError> {
    std::fs::create_dir_all(&plan.out).map_err(|source| TlsError::Write {
        path: plan.out.clone(),
        source,
    })?;
    let mut made = Made::default();
    let authority = match &plan.ca_dir {
        Some(dir) => {
            let ca = Authority::load(dir)?;
            write(&plan.out.join(CA_CERT), ca.cert_pem(), false)?;
            ca
        }
        None if !plan.new_ca && plan.out.join(CA_KEY).exists() => Authority::load(&plan.out)?,
        None => {
            let ca = Authority::generate(CA_VALIDITY.max(plan.valid_for))?;
            write(&plan.out.join(CA_KEY), ca.key_pem(), true)?;
            write(&plan.out.join(CA_CERT), ca.cert_pem(), false)?;
            made.new_ca = true;
            ca
        }
    };
    for name in &plan.names {
        let cert = plan.out.join(cert_file(name));
        let key = plan.out.join(key_file(name));
        if plan.keep_existing && !made.new_ca && cert.exists() && key.exists() {
            made.kept.push(name.clone());
            continue;
        }
        let mut hosts = plan.hosts.clone();
        for (part, extra) in &plan.extra_hosts {
            if part == name {
                hosts.extend(extra.iter().cloned());
            }
        }
        hosts.sort();
        hosts.dedup();
        let leaf = authority.issue(name, &hosts, plan.valid_for)?;
        write(&key, &leaf.key_pem, true)?;
        write(&cert, &leaf.cert_pem, false)?;
        made.issued.push(name.clone());
    }
    Ok(made)
}

/// Replaces `path` whole: written beside it, then renamed over it. Keys are owner-only.
fn write(path: &Path, text: &str, secret: bool) -> Result<(), TlsError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let failed = |source| TlsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = path.with_file_name(format!(".{file_name}.new"));
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if secret { 0o600 } else { 0o644 })
        .open(&temp)
        .map_err(failed)?;
    file.write_all(text.as_bytes()).map_err(failed)?;
    file.sync_all().map_err(failed)?;
    std::fs::rename(&temp, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Tls, TlsFiles};

    fn hosts() -> Vec<String> {
        vec!["127.0.0.1".into(), "localhost".into()]
    }

    #[test]
    fn made_certificates_load_and_chain_to_their_ca() {
        let dir = tempfile::tempdir().unwrap();
        let made = make(&Plan::new(dir.path(), hosts())).unwrap();
        assert!(made.new_ca);
        assert_eq!(made.issued.len(), NAMES.len());
        for name in NAMES {
            Tls::load(&TlsFiles::in_dir(dir.path(), name)).unwrap();
        }
        let mode = |f: &str| {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::metadata(dir.path().join(f))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(CA_KEY), 0o600);
        assert_eq!(mode("bbs-key.pem"), 0o600);
        assert_eq!(mode("bbs.pem"), 0o644);
    }

    #[test]
    fn making_again_keeps_the_ca_and_renews_the_leaves() {
        let dir = tempfile::tempdir().unwrap();
        make(&Plan::new(dir.path(), hosts())).unwrap();
        let ca = std::fs::read(dir.path().join(CA_CERT)).unwrap();
        let leaf = std::fs::read(dir.path().join("bbs.pem")).unwrap();
        let again = make(&Plan::new(dir.path(), hosts())).unwrap();
        assert!(!again.new_ca);
        assert_eq!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca);
        assert_ne!(std::fs::read(dir.path().join("bbs.pem")).unwrap(), leaf);
        let kept = make(&Plan {
            keep_existing: true,
            ..Plan::new(dir.path(), hosts())
        })
        .unwrap();
        assert_eq!(kept.kept.len(), NAMES.len());
        let rotated = make(&Plan {
            new_ca: true,
            ..Plan::new(dir.path(), hosts())
        })
        .unwrap();
        assert!(rotated.new_ca);
        assert_ne!(std::fs::read(dir.path().join(CA_CERT)).unwrap(), ca);
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused_at_load() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        make(&Plan::new(a.path(), hosts())).unwrap();
        make(&Plan::new(b.path(), hosts())).unwrap();
        let files = TlsFiles {
            ca: a.path().join(CA_CERT),
            ..TlsFiles::in_dir(b.path(), "bbs")
        };
        let err = Tls::load(&files).unwrap_err().to_string();
        assert!(
            err.contains("bbs.pem") && err.contains("diego certs"),
            "{err}"
        );
    }

    #[test]
    fn a_ca_dir_signs_without_its_key_leaving_it() {
        let (ca, out) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        make(&Plan {
            names: vec![],
            ..Plan::new(ca.path(), hosts())
        })
        .unwrap();
        make(&Plan {
            ca_dir: Some(ca.path().to_path_buf()),
            names: vec!["cell-7".into()],
            ..Plan::new(out.path(), hosts())
        })
        .unwrap();
        assert!(!out.path().join(CA_KEY).exists());
        Tls::load(&TlsFiles::in_dir(out.path(), "cell-7")).unwrap();
    }
}
