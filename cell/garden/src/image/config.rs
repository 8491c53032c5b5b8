//! Resolving an image: its manifest (through the index, for this host's platform) and its
//! config, read with `oci_spec::image`'s types. Docker v2 schema 2 manifests and manifest
//! lists have the OCI shapes and parse the same way; schema 1 is refused.

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::reference::sha256_hex;
use super::registry::{DOCUMENT_MAX, read_limited};
use super::{ExposedPort, ImageConfig, ImageError, ImageRef, Protocol, Puller, Result, digest_of};

/// The OCI architecture name of this host.
fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// Whether a layer's media type is zstd-compressed (we unpack tar and gzip only).
fn is_zstd(media_type: &MediaType) -> bool {
    matches!(
        media_type,
        MediaType::ImageLayerZstd | MediaType::ImageLayerNonDistributableZstd
    ) || media_type.to_string().contains("zstd")
}

/// An image index (OCI's or a Docker manifest list), by its `manifests`; else a manifest.
enum Document {
    Index(Box<ImageIndex>),
    Manifest(Box<ImageManifest>),
}

fn parse_document(image: &ImageRef, body: &[u8]) -> Result<Document> {
    let bad = |message: String| ImageError::BadDocument {
        image: image.to_string(),
        what: "manifest".into(),
        message,
    };
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| bad(e.to_string()))?;
    let schema_version = value
        .get("schemaVersion")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    if schema_version != 2 {
        return Err(ImageError::Unsupported {
            image: image.to_string(),
            message: format!("manifest schema version {schema_version}"),
        });
    }
    if value.get("manifests").is_some() {
        serde_json::from_value(value)
            .map(|i| Document::Index(Box::new(i)))
            .map_err(|e| ImageError::BadDocument {
                image: image.to_string(),
                what: "index".into(),
                message: e.to_string(),
            })
    } else {
        serde_json::from_value(value)
            .map(|m| Document::Manifest(Box::new(m)))
            .map_err(|e| bad(e.to_string()))
    }
}

impl Puller {
    /// The config and the layers of `image` (for this host's platform).
    pub(super) async fn resolve(&self, image: &ImageRef) -> Result<(ImageConfig, Vec<Descriptor>)> {
        let bad = |what: &str, message: String| ImageError::BadDocument {
            image: image.to_string(),
            what: what.into(),
            message,
        };
        let (body, mut digest, content_type) = self.document(image, &image.reference).await?;
        let manifest = match parse_document(image, &body)? {
            Document::Manifest(m) => *m,
            Document::Index(index) => {
                let arch = host_arch();
                let pick = index
                    .manifests()
                    .iter()
                    .filter(|m| {
                        m.platform().as_ref().is_some_and(|p| {
                            p.os().to_string() == "linux" && p.architecture().to_string() == arch
                        })
                    })
                    .min_by_key(|m| {
                        // arm64 images may say v8; prefer no variant or the first one
                        m.platform().as_ref().and_then(|p| p.variant().clone())
                    })
                    .ok_or_else(|| ImageError::Unsupported {
                        image: image.to_string(),
                        message: format!("no linux/{arch} manifest in its index"),
                    })?;
                let pick_digest = pick.digest().to_string();
                sha256_hex(&pick_digest)
                    .map_err(|()| bad("index", format!("bad digest {pick_digest}")))?;
                tracing::debug!(image = %image, index_type = %content_type, manifest = %pick_digest, media_type = %pick.media_type(), "picked platform manifest");
                let (body, d, _) = self.document(image, &pick_digest).await?;
                digest = d;
                match parse_document(image, &body)? {
                    Document::Manifest(m) => *m,
                    Document::Index(_) => {
                        return Err(bad("index", "an index inside an index".into()));
                    }
                }
            }
        };
        let layers = manifest.layers().clone();
        for layer in &layers {
            let d = layer.digest().to_string();
            sha256_hex(&d).map_err(|()| bad("manifest", format!("bad layer digest {d}")))?;
            if is_zstd(layer.media_type()) {
                return Err(ImageError::Unsupported {
                    image: image.to_string(),
                    message: format!("layer media type {}", layer.media_type()),
                });
            }
        }
        if let Some(mt) = manifest.media_type() {
            tracing::debug!(image = %image, media_type = %mt, "manifest");
        }
        let config_desc = manifest.config();
        let config_digest = config_desc.digest().to_string();
        sha256_hex(&config_digest)
            .map_err(|()| bad("manifest", format!("bad config digest {config_digest}")))?;
        let url = format!("{}/blobs/{config_digest}", self.base_url(image)?);
        let resp = self.get(image, &url, "*/*").await?;
        if !resp.status().is_success() {
            return Err(self.status_error(image, &url, resp).await);
        }
        let raw = read_limited(resp, &url, DOCUMENT_MAX).await?;
        let actual = digest_of(&raw);
        if actual != config_digest {
            return Err(ImageError::DigestMismatch {
                what: "config".into(),
                image: image.to_string(),
                expected: config_digest,
                actual,
            });
        }
        let blob: ImageConfiguration =
            serde_json::from_slice(&raw).map_err(|e| bad("config", e.to_string()))?;
        let c = blob.config().clone().unwrap_or_default();
        let mut exposed_ports = Vec::new();
        for key in c.exposed_ports().iter().flatten() {
            let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
            let port: u16 = port
                .parse()
                .map_err(|_| bad("config", format!("bad exposed port {key}")))?;
            let protocol = match proto {
                "tcp" => Protocol::Tcp,
                "udp" => Protocol::Udp,
                other => return Err(bad("config", format!("bad exposed port protocol {other}"))),
            };
            exposed_ports.push(ExposedPort { port, protocol });
        }
        exposed_ports.sort();
        exposed_ports.dedup();
        let config = ImageConfig {
            reference: image.to_string(),
            manifest_digest: digest,
            entrypoint: c.entrypoint().clone().unwrap_or_default(),
            cmd: c.cmd().clone().unwrap_or_default(),
            env: c.env().clone().unwrap_or_default(),
            user: c.user().clone().filter(|u| !u.is_empty()),
            working_dir: c.working_dir().clone().filter(|w| !w.is_empty()),
            exposed_ports,
            layers: layers.iter().map(|l| l.digest().to_string()).collect(),
        };
        Ok((config, layers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image() -> ImageRef {
        ImageRef::parse("docker://127.0.0.1:5000/app:v1", super::super::DOCKER_HUB).unwrap()
    }

    #[test]
    fn docker_v2_schema_2_documents_parse_as_oci_types() {
        let d = |c: char| format!("sha256:{}", c.to_string().repeat(64));
        let list = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.list.v2+json",
            "manifests": [{
                "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
                "digest": d('a'), "size": 528,
                "platform": {"architecture": "amd64", "os": "linux"}
            }]
        });
        let Document::Index(index) = parse_document(&image(), list.to_string().as_bytes()).unwrap()
        else {
            panic!("a manifest list is an index");
        };
        assert_eq!(index.manifests()[0].digest().to_string(), d('a'));
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "digest": d('b'), "size": 1470},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                        "digest": d('c'), "size": 977}]
        });
        let Document::Manifest(m) =
            parse_document(&image(), manifest.to_string().as_bytes()).unwrap()
        else {
            panic!("a manifest");
        };
        assert_eq!(
            m.layers()[0].media_type().to_string(),
            "application/vnd.docker.image.rootfs.diff.tar.gzip"
        );
        assert!(!is_zstd(m.layers()[0].media_type()));
        assert!(is_zstd(&MediaType::ImageLayerZstd));
        let v1 = br#"{"schemaVersion": 1, "name": "x", "fsLayers": []}"#;
        assert!(matches!(
            parse_document(&image(), v1),
            Err(ImageError::Unsupported { .. })
        ));
        let bad_digest = br#"{"schemaVersion": 2, "config": {"mediaType": "x", "digest": "sha256:zz", "size": 1}, "layers": []}"#;
        assert!(matches!(
            parse_document(&image(), bad_digest),
            Err(ImageError::BadDocument { .. })
        ));
    }
}
