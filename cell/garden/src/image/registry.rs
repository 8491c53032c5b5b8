//! The registry's HTTP side (the distribution API): base URLs (plain HTTP for loopback and
//! insecure registries, HTTPS otherwise), GETs answering `WWW-Authenticate` challenges (Basic
//! with configured credentials, or a Bearer token from the challenge's realm), manifests and
//! indexes by tag or digest (verified when asked by digest), and size-capped reads.

use std::collections::HashMap;

use base64::Engine as _;
use serde::Deserialize;

use super::{Credentials, ImageError, ImageRef, Puller, Result, digest_of, lock};

/// Media types of manifests and indexes we ask for, most specific first: OCI's, then Docker
/// v2 schema 2's (the same JSON shapes).
const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";
/// Largest manifest, index or config accepted (they are read into memory).
pub(super) const DOCUMENT_MAX: u64 = 8 << 20;

pub(super) fn is_loopback(registry: &str) -> bool {
    let host = registry
        .rsplit_once(':')
        .filter(|(h, p)| !h.ends_with(':') && p.chars().all(|c| c.is_ascii_digit()))
        .map_or(registry, |(h, _)| h);
    matches!(host, "localhost" | "[::1]") || host.starts_with("127.")
}

/// Key-value pairs of a `WWW-Authenticate` challenge (`Bearer realm="…",service="…"`).
fn parse_challenge(header: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    let mut params = HashMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => value.extend(chars.next()),
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.peek().copied() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    (scheme.to_ascii_lowercase(), params)
}

impl Puller {
    pub(super) fn base_url(&self, image: &ImageRef) -> Result<String> {
        let plain =
            is_loopback(&image.registry) || self.cfg.insecure_registries.contains(&image.registry);
        if !plain && !cfg!(feature = "tls") {
            return Err(ImageError::TlsUnavailable {
                registry: image.registry.clone(),
            });
        }
        let scheme = if plain { "http" } else { "https" };
        Ok(format!(
            "{scheme}://{}/v2/{}",
            image.registry, image.repository
        ))
    }

    /// GET `url` with the cached authorization; on 401 answers the challenge once and retries.
    pub(super) async fn get(
        &self,
        image: &ImageRef,
        url: &str,
        accept: &str,
    ) -> Result<reqwest::Response> {
        let key = format!("{}/{}", image.registry, image.repository);
        let send = |auth: Option<String>| {
            let mut req = self.http.get(url).header(reqwest::header::ACCEPT, accept);
            if let Some(a) = auth {
                req = req.header(reqwest::header::AUTHORIZATION, a);
            }
            req.send()
        };
        let transport = |e: reqwest::Error| ImageError::Transport {
            url: url.to_string(),
            message: error_chain(&e),
        };
        let cached = lock(&self.auth).get(&key).cloned();
        let had_auth = cached.is_some();
        let resp = send(cached).await.map_err(transport)?;
        if resp.status() != reqwest::StatusCode::UNAUTHORIZED {
            return Ok(resp);
        }
        let challenge = resp
            .headers()
            .get(reqwest::header::WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let Some(challenge) = challenge else {
            return Err(self.status_error(image, url, resp).await);
        };
        let authorization = self.authorize(image, &challenge).await?;
        tracing::debug!(registry = %image.registry, had_auth, "answered registry auth challenge");
        lock(&self.auth).insert(key, authorization.clone());
        let resp = send(Some(authorization)).await.map_err(transport)?;
        Ok(resp)
    }

    /// An `Authorization` value answering `challenge`.
    async fn authorize(&self, image: &ImageRef, challenge: &str) -> Result<String> {
        let creds = self.cfg.credentials.get(&image.registry);
        let basic = |c: &Credentials| {
            let raw = format!("{}:{}", c.username, c.password);
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(raw)
            )
        };
        let (scheme, params) = parse_challenge(challenge);
        match scheme.as_str() {
            "basic" => creds.map(basic).ok_or_else(|| ImageError::Unauthorized {
                image: image.to_string(),
                message: format!("registry {} wants credentials", image.registry),
            }),
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| ImageError::Unauthorized {
                        image: image.to_string(),
                        message: "bearer challenge without realm".into(),
                    })?;
                let scope = params
                    .get("scope")
                    .cloned()
                    .unwrap_or_else(|| format!("repository:{}:pull", image.repository));
                let mut query = vec![("scope", scope)];
                if let Some(service) = params.get("service") {
                    query.push(("service", service.clone()));
                }
                let mut req = self.http.get(realm).query(&query);
                if let Some(c) = creds {
                    req = req.header(reqwest::header::AUTHORIZATION, basic(c));
                }
                let resp = req.send().await.map_err(|e| ImageError::Transport {
                    url: realm.clone(),
                    message: error_chain(&e),
                })?;
                if !resp.status().is_success() {
                    let status = resp.status().as_u16();
                    let body = resp.text().await.unwrap_or_default();
                    return Err(ImageError::Unauthorized {
                        image: image.to_string(),
                        message: format!(
                            "token service {realm} answered {status}: {}",
                            truncate(&body)
                        ),
                    });
                }
                #[derive(Deserialize)]
                struct Token {
                    #[serde(default)]
                    token: Option<String>,
                    #[serde(default)]
                    access_token: Option<String>,
                }
                let body = read_limited(resp, realm, DOCUMENT_MAX).await?;
                let token: Token =
                    serde_json::from_slice(&body).map_err(|e| ImageError::Unauthorized {
                        image: image.to_string(),
                        message: format!("bad token from {realm}: {e}"),
                    })?;
                let token =
                    token
                        .token
                        .or(token.access_token)
                        .ok_or_else(|| ImageError::Unauthorized {
                            image: image.to_string(),
                            message: format!("no token from {realm}"),
                        })?;
                Ok(format!("Bearer {token}"))
            }
            other => Err(ImageError::Unauthorized {
                image: image.to_string(),
                message: format!("unsupported auth scheme {other}"),
            }),
        }
    }

    pub(super) async fn status_error(
        &self,
        image: &ImageRef,
        url: &str,
        resp: reqwest::Response,
    ) -> ImageError {
        let status = resp.status();
        let body = resp.text().await.unwrap_or_default();
        match status {
            reqwest::StatusCode::NOT_FOUND => ImageError::NotFound {
                image: image.to_string(),
                message: truncate(&body),
            },
            reqwest::StatusCode::UNAUTHORIZED | reqwest::StatusCode::FORBIDDEN => {
                ImageError::Unauthorized {
                    image: image.to_string(),
                    message: truncate(&body),
                }
            }
            _ => ImageError::Registry {
                url: url.to_string(),
                status: status.as_u16(),
                message: truncate(&body),
            },
        }
    }

    /// A manifest or index by tag or digest: (body, its digest, content type).
    pub(super) async fn document(
        &self,
        image: &ImageRef,
        reference: &str,
    ) -> Result<(Vec<u8>, String, String)> {
        let url = format!("{}/manifests/{reference}", self.base_url(image)?);
        let resp = self.get(image, &url, MANIFEST_ACCEPT).await?;
        if !resp.status().is_success() {
            return Err(self.status_error(image, &url, resp).await);
        }
        let content_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = read_limited(resp, &url, DOCUMENT_MAX).await?;
        let digest = digest_of(&body);
        if reference.contains(':') && digest != reference {
            return Err(ImageError::DigestMismatch {
                what: "manifest".into(),
                image: image.to_string(),
                expected: reference.to_string(),
                actual: digest,
            });
        }
        Ok((body, digest, content_type))
    }
}

pub(super) async fn read_limited(
    mut resp: reqwest::Response,
    url: &str,
    max: u64,
) -> Result<Vec<u8>> {
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| ImageError::Transport {
        url: url.to_string(),
        message: error_chain(&e),
    })? {
        if body.len() as u64 + chunk.len() as u64 > max {
            return Err(ImageError::Registry {
                url: url.to_string(),
                status: 200,
                message: format!("document larger than {max} bytes"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn truncate(s: &str) -> String {
    let s = s.trim();
    match s.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::{ExposedPort, Protocol, RegistryConfig};

    #[test]
    fn loopback_and_challenges() {
        assert!(is_loopback("127.0.0.1:5000"));
        assert!(is_loopback("localhost"));
        assert!(is_loopback("[::1]:5000"));
        assert!(!is_loopback("registry-1.docker.io"));
        let (scheme, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:a/b:pull,push""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:a/b:pull,push");
        let (scheme, p) = parse_challenge(r#"Basic realm="basic-realm""#);
        assert_eq!(
            (scheme.as_str(), p["realm"].as_str()),
            ("basic", "basic-realm")
        );
    }

    /// A registry that wants a Bearer token from its token service (which wants Basic
    /// credentials), or Basic auth itself, serving one image's manifest and config.
    async fn auth_registry(bearer: bool) -> String {
        use axum::extract::Query;
        use axum::http::{HeaderMap, StatusCode, header};
        use axum::response::IntoResponse;
        use axum::routing::get;

        let config = br#"{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Cmd":["/bin/app"],"ExposedPorts":{"53/udp":{}}}}"#;
        let config_digest = digest_of(config);
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": config_digest, "size": config.len()},
            "layers": []
        })
        .to_string();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("user:pw")
        );
        let wanted = if bearer {
            "Bearer tok".to_string()
        } else {
            basic.clone()
        };
        let challenge = if bearer {
            format!(
                r#"Bearer realm="http://{addr}/token",service="reg",scope="repository:team/app:pull""#
            )
        } else {
            r#"Basic realm="reg""#.to_string()
        };
        let guard = move |h: &HeaderMap| {
            h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) == Some(wanted.as_str())
        };
        let (g1, g2, c1) = (guard.clone(), guard, challenge.clone());
        let app = axum::Router::new()
            .route(
                "/token",
                get(
                    move |h: HeaderMap, Query(q): Query<HashMap<String, String>>| async move {
                        let ok = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
                            == Some(basic.as_str())
                            && q.get("service").map(String::as_str) == Some("reg")
                            && q.get("scope").map(String::as_str)
                                == Some("repository:team/app:pull");
                        if ok {
                            (StatusCode::OK, r#"{"token":"tok"}"#).into_response()
                        } else {
                            StatusCode::UNAUTHORIZED.into_response()
                        }
                    },
                ),
            )
            .route(
                "/v2/team/app/manifests/v1",
                get(move |h: HeaderMap| async move {
                    if g1(&h) {
                        (
                            [(
                                header::CONTENT_TYPE,
                                "application/vnd.oci.image.manifest.v1+json",
                            )],
                            manifest,
                        )
                            .into_response()
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, c1)],
                            "",
                        )
                            .into_response()
                    }
                }),
            )
            .route(
                &format!("/v2/team/app/blobs/{config_digest}"),
                get(move |h: HeaderMap| async move {
                    if g2(&h) {
                        config.to_vec().into_response()
                    } else {
                        (
                            StatusCode::UNAUTHORIZED,
                            [(header::WWW_AUTHENTICATE, challenge)],
                            "",
                        )
                            .into_response()
                    }
                }),
            );
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr.to_string()
    }

    #[tokio::test]
    async fn bearer_and_basic_auth() {
        for bearer in [true, false] {
            let host = auth_registry(bearer).await;
            let reference = format!("docker://{host}/team/app:v1");
            let err = Puller::default().inspect(&reference).await.unwrap_err();
            assert!(matches!(err, ImageError::Unauthorized { .. }), "{err}");
            let mut cfg = RegistryConfig::default();
            cfg.credentials.insert(
                host.clone(),
                Credentials {
                    username: "user".into(),
                    password: "pw".into(),
                },
            );
            let c = Puller::new(cfg).inspect(&reference).await.unwrap();
            assert_eq!(c.cmd, ["/bin/app"]);
            assert_eq!(
                c.exposed_ports,
                [ExposedPort {
                    port: 53,
                    protocol: Protocol::Udp
                }]
            );
        }
    }
}
