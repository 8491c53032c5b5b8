//! What every handler and background job shares: records, clients, lifecycles, deployments.

use diego_bbs_client::BbsClient;
use diego_logs::{LogEnvelope, LogSender, LogStream};

use crate::blobs::Blobs;
use crate::db::Db;
use crate::deploy::Deployments;
use crate::lifecycles::Lifecycles;
use crate::model::AppEvent;
use crate::{ApiConfig, StartError};

#[derive(Debug)]
pub struct State {
    pub config: ApiConfig,
    pub db: Db,
    pub bbs: BbsClient,
    pub blobs: Blobs,
    pub logs: LogSender,
    pub lifecycles: Lifecycles,
    pub deployments: Deployments,
    /// Wakes the bulk pass early (e.g. an app's DesiredLRP was removed behind our back).
    pub sync_now: tokio::sync::Notify,
}

impl State {
    pub fn open(config: ApiConfig) -> Result<State, StartError> {
        let db = Db::open(&config.data_dir.join("apps.redb"))?;
        let logs = match &config.logs_url {
            Some(url) => LogSender::spawn_with_tls(url, config.tls.as_ref()),
            None => LogSender::disabled(),
        };
        Ok(State {
            bbs: BbsClient::with_tls(&config.bbs_url, config.tls.as_ref()),
            blobs: Blobs::new(&config.blobstore_url, config.tls.as_ref()),
            lifecycles: Lifecycles::new(config.wasm_cache_dir.clone()),
            deployments: Deployments::default(),
            sync_now: tokio::sync::Notify::new(),
            logs,
            db,
            config,
        })
    }

    /// Records an app event and says it on the app's log stream (`[API/0]`).
    pub async fn event(&self, app_guid: &str, kind: &str, message: impl Into<String>) {
        self.event_with(app_guid, kind, message.into(), None, None)
            .await
    }

    pub async fn event_with(
        &self,
        app_guid: &str,
        kind: &str,
        message: String,
        instance_index: Option<i32>,
        exit_description: Option<String>,
    ) {
        self.api_log(app_guid, &message);
        let event = AppEvent {
            timestamp: now_ns(),
            kind: kind.to_owned(),
            message,
            instance_index,
            exit_description,
        };
        if let Err(e) = self.db.push_event(app_guid, event).await {
            tracing::warn!(app_guid, error = %e, "cannot record an app event");
        }
    }

    /// One line on the app's log stream from the API.
    pub fn api_log(&self, app_guid: &str, message: &str) {
        self.logs.send(LogEnvelope::new(
            app_guid,
            "API",
            "0",
            LogStream::Stdout,
            message,
        ));
    }
}

/// Nanoseconds since the Unix epoch.
pub fn now_ns() -> i64 {
    diego_logs::now_ns()
}
