//! HTTP client of the Garden API ([`crate::api`]); it implements [`Backend`], so an executor
//! drives a remote Garden exactly like a local one.

use std::collections::BTreeMap;

use base64::Engine;
use futures::StreamExt;
use serde::de::DeserializeOwned;

use crate::api::{Frame, HandleBody, HandlesBody, ProcessIdBody, SignalBody};
use crate::backend::{Backend, ByteStream, ProcessStream};
use crate::error::{Error, Result};
use crate::types::{
    ContainerInfo, ContainerMetrics, ContainerSpec, NetIn, PortMapping, ProcessEvent, ProcessSpec,
    TtySpec,
};

/// A Garden API client.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    http: reqwest::Client,
}

fn transport(e: reqwest::Error) -> Error {
    Error::Transport(e.to_string())
}

impl Client {
    /// A client for `base` (for example `http://127.0.0.1:7777`).
    pub fn new(base: impl Into<String>) -> Self {
        Client {
            base: base.into().trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn c(&self, handle: &str, rest: &str) -> String {
        self.url(&format!("/containers/{handle}{rest}"))
    }

    /// Turns an error answer into [`Error::Remote`] (or the matching local kind).
    async fn check(resp: reqwest::Response) -> Result<reqwest::Response> {
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        let kind = body["error"]["type"]
            .as_str()
            .unwrap_or("Unknown")
            .to_string();
        let message = body["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| format!("http status {status}"));
        Err(Error::Remote { kind, message })
    }

    async fn json<T: DeserializeOwned>(req: reqwest::RequestBuilder) -> Result<T> {
        let resp = Self::check(req.send().await.map_err(transport)?).await?;
        resp.json().await.map_err(transport)
    }

    async fn empty(req: reqwest::RequestBuilder) -> Result<()> {
        Self::check(req.send().await.map_err(transport)?)
            .await
            .map(drop)
    }

    /// `GET /ping`.
    pub async fn ping(&self) -> Result<()> {
        Self::empty(self.http.get(self.url("/ping"))).await
    }
}

fn decode_frame(line: &[u8]) -> Result<ProcessEvent> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let bad = |m: String| Error::Transport(format!("bad process frame: {m}"));
    let frame: Frame = serde_json::from_slice(line).map_err(|e| bad(e.to_string()))?;
    Ok(match frame {
        Frame::Stdout(s) => {
            ProcessEvent::Stdout(b64.decode(s).map_err(|e| bad(e.to_string()))?.into())
        }
        Frame::Stderr(s) => {
            ProcessEvent::Stderr(b64.decode(s).map_err(|e| bad(e.to_string()))?.into())
        }
        Frame::Exit(c) => ProcessEvent::Exit(c),
        Frame::Error { kind, message } => return Err(Error::Remote { kind, message }),
    })
}

#[async_trait::async_trait]
impl Backend for Client {
    async fn create(&self, spec: ContainerSpec) -> Result<String> {
        let body: HandleBody =
            Self::json(self.http.post(self.url("/containers")).json(&spec)).await?;
        Ok(body.handle)
    }

    async fn destroy(&self, handle: &str) -> Result<()> {
        Self::empty(self.http.delete(self.c(handle, ""))).await
    }

    async fn list(&self, filter: &BTreeMap<String, String>) -> Result<Vec<String>> {
        let body: HandlesBody =
            Self::json(self.http.get(self.url("/containers")).query(filter)).await?;
        Ok(body.handles)
    }

    async fn run(&self, handle: &str, spec: ProcessSpec) -> Result<String> {
        let body: ProcessIdBody =
            Self::json(self.http.post(self.c(handle, "/processes")).json(&spec)).await?;
        Ok(body.id)
    }

    async fn attach(&self, handle: &str, process_id: &str) -> Result<ProcessStream> {
        let resp = self
            .http
            .get(self.c(handle, &format!("/processes/{process_id}")))
            .send()
            .await
            .map_err(transport)?;
        let resp = Self::check(resp).await?;
        let bytes = resp.bytes_stream();
        let stream = futures::stream::unfold(
            (bytes, Vec::<u8>::new(), false),
            |(mut bytes, mut buf, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let ev = decode_frame(&line[..line.len() - 1]);
                        let last = matches!(ev, Ok(ProcessEvent::Exit(_)) | Err(_));
                        return Some((ev, (bytes, buf, last)));
                    }
                    match bytes.next().await {
                        Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                        Some(Err(e)) => return Some((Err(transport(e)), (bytes, buf, true))),
                        None => return None,
                    }
                }
            },
        );
        Ok(Box::pin(stream))
    }

    async fn signal(&self, handle: &str, process_id: &str, signal: i32) -> Result<()> {
        Self::empty(
            self.http
                .post(self.c(handle, &format!("/processes/{process_id}/signal")))
                .json(&SignalBody { signal }),
        )
        .await
    }

    async fn write_stdin(&self, handle: &str, process_id: &str, data: bytes::Bytes) -> Result<()> {
        Self::empty(
            self.http
                .post(self.c(handle, &format!("/processes/{process_id}/stdin")))
                .body(data),
        )
        .await
    }

    async fn close_stdin(&self, handle: &str, process_id: &str) -> Result<()> {
        Self::empty(
            self.http
                .delete(self.c(handle, &format!("/processes/{process_id}/stdin"))),
        )
        .await
    }

    async fn resize(&self, handle: &str, process_id: &str, size: TtySpec) -> Result<()> {
        Self::empty(
            self.http
                .post(self.c(handle, &format!("/processes/{process_id}/resize")))
                .json(&size),
        )
        .await
    }

    async fn stream_in(&self, handle: &str, path: &str, tar: ByteStream) -> Result<()> {
        Self::empty(
            self.http
                .put(self.c(handle, "/stream_in"))
                .query(&[("path", path)])
                .body(reqwest::Body::wrap_stream(tar)),
        )
        .await
    }

    async fn stream_out(&self, handle: &str, path: &str) -> Result<ByteStream> {
        let resp = self
            .http
            .get(self.c(handle, "/stream_out"))
            .query(&[("path", path)])
            .send()
            .await
            .map_err(transport)?;
        let stream = Self::check(resp)
            .await?
            .bytes_stream()
            .map(|chunk| chunk.map_err(transport));
        Ok(Box::pin(stream))
    }

    async fn properties(&self, handle: &str) -> Result<BTreeMap<String, String>> {
        Self::json(self.http.get(self.c(handle, "/properties"))).await
    }

    async fn property(&self, handle: &str, name: &str) -> Result<String> {
        let resp = self
            .http
            .get(self.c(handle, &format!("/properties/{name}")))
            .send()
            .await
            .map_err(transport)?;
        Self::check(resp).await?.text().await.map_err(transport)
    }

    async fn set_property(&self, handle: &str, name: &str, value: &str) -> Result<()> {
        Self::empty(
            self.http
                .put(self.c(handle, &format!("/properties/{name}")))
                .body(value.to_string()),
        )
        .await
    }

    async fn remove_property(&self, handle: &str, name: &str) -> Result<()> {
        Self::empty(
            self.http
                .delete(self.c(handle, &format!("/properties/{name}"))),
        )
        .await
    }

    async fn info(&self, handle: &str) -> Result<ContainerInfo> {
        Self::json(self.http.get(self.c(handle, "/info"))).await
    }

    async fn metrics(&self, handle: &str) -> Result<ContainerMetrics> {
        Self::json(self.http.get(self.c(handle, "/metrics"))).await
    }

    async fn runtime_spec(&self, handle: &str) -> Result<oci_spec::runtime::Spec> {
        Self::json(self.http.get(self.c(handle, "/spec"))).await
    }

    async fn net_in(&self, handle: &str, net_in: NetIn) -> Result<PortMapping> {
        Self::json(self.http.post(self.c(handle, "/net_in")).json(&net_in)).await
    }
}
