//! The typed client of the apps API, one method per route (what the `diego` CLI uses).
//!
//! ```no_run
//! # async fn demo() -> Result<(), diego_apps_api::AppsClientError> {
//! let api = diego_apps_api::AppsClient::new("http://127.0.0.1:9090");
//! for app in api.apps().await? {
//!     println!("{} {:?} {}/{}", app.name, app.state, app.running, app.instances);
//! }
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::model::*;

/// What went wrong talking to the apps API.
#[derive(Debug, thiserror::Error)]
pub enum AppsClientError {
    /// The API answered with an error: its HTTP status, `code` and message.
    #[error("{message} ({code}, HTTP {status})")]
    Api {
        status: u16,
        code: String,
        message: String,
    },
    /// The API could not be reached or the connection broke.
    #[error("cannot reach the apps API at {url}: {message}")]
    Transport { url: String, message: String },
    /// The API answered something this client cannot read.
    #[error("unexpected answer from {url}: {message}")]
    Decode { url: String, message: String },
}

impl AppsClientError {
    /// The HTTP status, if the API answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            AppsClientError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error code (`app_not_found`, `invalid_name`, `empty_bits`, ...), if the API answered.
    pub fn code(&self) -> Option<&str> {
        match self {
            AppsClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

pub type Result<T> = std::result::Result<T, AppsClientError>;

/// Which archive format an upload is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    Zip,
    TarGz,
}

impl ArchiveFormat {
    fn content_type(self) -> &'static str {
        match self {
            ArchiveFormat::Zip => "application/zip",
            ArchiveFormat::TarGz => "application/gzip",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AppsClient {
    http: reqwest::Client,
    base: String,
}

impl AppsClient {
    /// A client for the API at `api_url` (e.g. `http://127.0.0.1:9090`).
    pub fn new(api_url: impl Into<String>) -> Self {
        Self::with_tls(api_url, None)
    }

    /// A client presenting `tls`'s identity to an API serving mutual TLS.
    pub fn with_tls(api_url: impl Into<String>, tls: Option<&diego_tls::Tls>) -> Self {
        let http = diego_tls::client_builder(tls)
            .connect_timeout(Duration::from_secs(5))
            .build()
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot configure the API client; using a default one");
                reqwest::Client::new()
            });
        AppsClient {
            http,
            base: api_url.into().trim_end_matches('/').to_owned(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A client of the log server the API serves on its port, sharing this client's
    /// connections and identity.
    pub fn logs(&self) -> diego_logs::LogClient {
        diego_logs::LogClient::with_http(&self.base, self.http.clone())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, request: reqwest::RequestBuilder, url: &str) -> Result<reqwest::Response> {
        let response = request
            .send()
            .await
            .map_err(|e| AppsClientError::Transport {
                url: url.to_owned(),
                message: diego_tls::error_chain(&e),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(response);
        }
        let body = response.bytes().await.unwrap_or_default();
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(e) => AppsClientError::Api {
                status: status.as_u16(),
                code: e.code,
                message: e.error,
            },
            Err(_) => AppsClientError::Api {
                status: status.as_u16(),
                code: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
                    .replace(' ', "_"),
                message: String::from_utf8_lossy(&body).into_owned(),
            },
        })
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<T> {
        let response = self.send(request, url).await?;
        let body = response
            .bytes()
            .await
            .map_err(|e| AppsClientError::Transport {
                url: url.to_owned(),
                message: e.to_string(),
            })?;
        serde_json::from_slice(&body).map_err(|e| AppsClientError::Decode {
            url: url.to_owned(),
            message: e.to_string(),
        })
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&(impl Serialize + ?Sized)>,
    ) -> Result<T> {
        let url = self.url(path);
        let mut request = self
            .http
            .request(method, &url)
            .timeout(Duration::from_secs(120));
        if let Some(body) = body {
            request = request.json(body);
        }
        self.json(request, &url).await
    }

    async fn no_content(&self, method: Method, path: &str) -> Result<()> {
        let url = self.url(path);
        let request = self
            .http
            .request(method, &url)
            .timeout(Duration::from_secs(120));
        self.send(request, &url).await.map(|_| ())
    }

    async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        bytes: Vec<u8>,
        format: ArchiveFormat,
    ) -> Result<T> {
        let url = self.url(path);
        let request = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, format.content_type())
            .body(bytes);
        self.json(request, &url).await
    }

    /// `GET /v1/info`.
    pub async fn info(&self) -> Result<Info> {
        self.call(Method::GET, "/v1/info", None::<&()>).await
    }

    /// `GET /v1/apps`.
    pub async fn apps(&self) -> Result<Vec<AppSummary>> {
        self.call(Method::GET, "/v1/apps", None::<&()>).await
    }

    /// `PUT /v1/apps/{name}`: creates or updates.
    pub async fn put_app(&self, name: &str, settings: &AppSettings) -> Result<AppView> {
        self.call(Method::PUT, &app_path(name, ""), Some(settings))
            .await
    }

    /// `GET /v1/apps/{name}`.
    pub async fn app(&self, name: &str) -> Result<AppView> {
        self.call(Method::GET, &app_path(name, ""), None::<&()>)
            .await
    }

    /// `DELETE /v1/apps/{name}`.
    pub async fn delete_app(&self, name: &str) -> Result<()> {
        self.no_content(Method::DELETE, &app_path(name, "")).await
    }

    /// `PUT /v1/apps/{name}/bits` with a zip or tgz of the app directory.
    pub async fn upload_bits(
        &self,
        name: &str,
        archive: Vec<u8>,
        format: ArchiveFormat,
    ) -> Result<AppView> {
        self.upload(&app_path(name, "/bits"), archive, format).await
    }

    /// `POST /v1/apps/{name}/start`.
    pub async fn start(&self, name: &str) -> Result<AppView> {
        self.call(Method::POST, &app_path(name, "/start"), None::<&()>)
            .await
    }

    /// `POST /v1/apps/{name}/restart`.
    pub async fn restart(&self, name: &str) -> Result<AppView> {
        self.call(Method::POST, &app_path(name, "/restart"), None::<&()>)
            .await
    }

    /// `POST /v1/apps/{name}/restage`.
    pub async fn restage(&self, name: &str) -> Result<AppView> {
        self.call(Method::POST, &app_path(name, "/restage"), None::<&()>)
            .await
    }

    /// `POST /v1/apps/{name}/stop`.
    pub async fn stop(&self, name: &str) -> Result<AppView> {
        self.call(Method::POST, &app_path(name, "/stop"), None::<&()>)
            .await
    }

    /// `POST /v1/apps/{name}/scale`.
    pub async fn scale(&self, name: &str, scale: &ScaleRequest) -> Result<AppView> {
        self.call(Method::POST, &app_path(name, "/scale"), Some(scale))
            .await
    }

    /// `GET /v1/apps/{name}/events`, oldest first.
    pub async fn events(&self, name: &str) -> Result<Vec<AppEvent>> {
        self.call(Method::GET, &app_path(name, "/events"), None::<&()>)
            .await
    }

    /// `PUT /v1/apps/{name}/env`: `Some` sets a variable, `None` unsets it.
    pub async fn set_env(
        &self,
        name: &str,
        changes: &BTreeMap<String, Option<String>>,
    ) -> Result<AppView> {
        self.call(Method::PUT, &app_path(name, "/env"), Some(changes))
            .await
    }

    /// `POST /v1/apps/{name}/tasks`.
    pub async fn run_task(&self, name: &str, task: &TaskRequest) -> Result<TaskView> {
        self.call(Method::POST, &app_path(name, "/tasks"), Some(task))
            .await
    }

    /// `GET /v1/apps/{name}/tasks`.
    pub async fn tasks(&self, name: &str) -> Result<Vec<TaskView>> {
        self.call(Method::GET, &app_path(name, "/tasks"), None::<&()>)
            .await
    }

    /// `GET /v1/buildpacks`.
    pub async fn buildpacks(&self) -> Result<Vec<BuildpackView>> {
        self.call(Method::GET, "/v1/buildpacks", None::<&()>).await
    }

    /// `PUT /v1/buildpacks/{name}[?position=N]` with a zip or tgz of the buildpack directory.
    pub async fn put_buildpack(
        &self,
        name: &str,
        position: Option<u32>,
        archive: Vec<u8>,
        format: ArchiveFormat,
    ) -> Result<BuildpackView> {
        let mut path = format!("/v1/buildpacks/{}", encode(name));
        if let Some(p) = position {
            path.push_str(&format!("?position={p}"));
        }
        self.upload(&path, archive, format).await
    }

    /// `DELETE /v1/buildpacks/{name}`.
    pub async fn delete_buildpack(&self, name: &str) -> Result<()> {
        self.no_content(Method::DELETE, &format!("/v1/buildpacks/{}", encode(name)))
            .await
    }
}

impl AppsClient {
    /// `GET /v1/lifecycles`: the built-in lifecycles, then the added ones.
    pub async fn lifecycles(&self) -> Result<Vec<LifecycleEntry>> {
        self.call(Method::GET, "/v1/lifecycles", None::<&()>).await
    }

    /// `GET /v1/lifecycles/{name}`.
    pub async fn lifecycle(&self, name: &str) -> Result<LifecycleEntry> {
        self.call(Method::GET, &lifecycle_path(name), None::<&()>)
            .await
    }

    /// `PUT /v1/lifecycles/{name}` with a `.wasm` component: checked, stored, made current.
    pub async fn add_lifecycle(&self, name: &str, component: Vec<u8>) -> Result<LifecycleEntry> {
        let path = lifecycle_path(name);
        let url = self.url(&path);
        let request = self
            .http
            .put(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/wasm")
            .timeout(Duration::from_secs(300))
            .body(component);
        self.json(request, &url).await
    }

    /// `DELETE /v1/lifecycles/{name}`.
    pub async fn remove_lifecycle(&self, name: &str) -> Result<LifecycleEntry> {
        self.call(Method::DELETE, &lifecycle_path(name), None::<&()>)
            .await
    }
}

fn lifecycle_path(name: &str) -> String {
    format!("/v1/lifecycles/{}", encode(name))
}

fn app_path(name: &str, rest: &str) -> String {
    format!("/v1/apps/{}{rest}", encode(name))
}

/// Percent-encodes a path segment (names are checked by the server; this only keeps a bad
/// one from changing the path).
fn encode(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(app_path("my app", "/bits"), "/v1/apps/my%20app/bits");
        assert_eq!(encode("a/b"), "a%2Fb");
    }
}
