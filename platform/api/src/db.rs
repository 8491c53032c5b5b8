//! The API's records in one redb file: apps by name, the buildpack list, each app's events.
//!
//! Every change is one redb write transaction (committed durably before the call returns), and
//! read-modify-write changes run their closure inside it: two requests changing one app are
//! serialized by redb's single writer, so neither loses the other's change.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use crate::error::{ApiError, ApiResult};
use crate::model::{App, AppEvent, Buildpack, MAX_EVENTS_PER_APP};

const APPS: TableDefinition<&str, &[u8]> = TableDefinition::new("apps");
const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const BUILDPACKS_KEY: &str = "buildpacks";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot open the apps database {path}: {message}")]
    Open { path: String, message: String },
    #[error("apps database: {0}")]
    Storage(String),
    #[error("apps database record {key:?} is unreadable: {message}")]
    Corrupt { key: String, message: String },
}

fn storage(e: impl std::fmt::Display) -> DbError {
    DbError::Storage(e.to_string())
}

/// What an update closure decided for the app record. (One lives at a time, briefly: its
/// size does not matter.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum AppWrite {
    Keep,
    Put(App),
    Delete,
}

#[derive(Debug, Clone)]
pub struct Db {
    db: Arc<Database>,
}

fn decode<T: serde::de::DeserializeOwned>(key: &str, bytes: &[u8]) -> Result<T, DbError> {
    serde_json::from_slice(bytes).map_err(|e| DbError::Corrupt {
        key: key.to_owned(),
        message: e.to_string(),
    })
}

fn encode<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, DbError> {
    serde_json::to_vec(value).map_err(storage)
}

impl Db {
    /// Opens (or creates) the database file and its tables.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let db = Database::create(path).map_err(|e| DbError::Open {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let txn = db.begin_write().map_err(storage)?;
        {
            txn.open_table(APPS).map_err(storage)?;
            txn.open_table(EVENTS).map_err(storage)?;
            txn.open_table(META).map_err(storage)?;
        }
        txn.commit().map_err(storage)?;
        Ok(Db { db: Arc::new(db) })
    }

    /// Runs blocking redb work off the async runtime's threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db))
            .await
            .map_err(|e| ApiError::internal(format!("database worker failed: {e}")))?
    }

    pub async fn app(&self, name: &str) -> ApiResult<Option<App>> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(APPS).map_err(storage)?;
            let found = table.get(name.as_str()).map_err(storage)?;
            Ok(match found {
                Some(v) => Some(decode(&name, v.value())?),
                None => None,
            })
        })
        .await
    }

    /// Every app, by name.
    pub async fn apps(&self) -> ApiResult<Vec<App>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(APPS).map_err(storage)?;
            let mut apps = Vec::new();
            for row in table.iter().map_err(storage)? {
                let (k, v) = row.map_err(storage)?;
                apps.push(decode(k.value(), v.value())?);
            }
            Ok(apps)
        })
        .await
    }

    /// The app whose guid is `guid`.
    pub async fn app_by_guid(&self, guid: &str) -> ApiResult<Option<App>> {
        Ok(self.apps().await?.into_iter().find(|a| a.guid == guid))
    }

    /// Reads the app `name` (if any), lets `f` decide, and writes its decision in the same
    /// transaction. An error from `f` writes nothing.
    pub async fn update_app<T: Send + 'static>(
        &self,
        name: &str,
        f: impl FnOnce(Option<App>) -> ApiResult<(AppWrite, T)> + Send + 'static,
    ) -> ApiResult<T> {
        let name = name.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let out = {
                let mut table = txn.open_table(APPS).map_err(storage)?;
                let current = match table.get(name.as_str()).map_err(storage)? {
                    Some(v) => Some(decode::<App>(&name, v.value())?),
                    None => None,
                };
                let (write, out) = f(current)?;
                match write {
                    AppWrite::Keep => {}
                    AppWrite::Put(app) => {
                        table
                            .insert(name.as_str(), encode(&app)?.as_slice())
                            .map_err(storage)?;
                    }
                    AppWrite::Delete => {
                        table.remove(name.as_str()).map_err(storage)?;
                    }
                }
                out
            };
            txn.commit().map_err(storage)?;
            Ok(out)
        })
        .await
    }

    /// Appends an event to the app's log, keeping the last [`MAX_EVENTS_PER_APP`].
    pub async fn push_event(&self, app_guid: &str, event: AppEvent) -> ApiResult<()> {
        let guid = app_guid.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(EVENTS).map_err(storage)?;
                let mut events: Vec<AppEvent> = match table.get(guid.as_str()).map_err(storage)? {
                    Some(v) => decode(&guid, v.value())?,
                    None => Vec::new(),
                };
                events.push(event);
                let excess = events.len().saturating_sub(MAX_EVENTS_PER_APP);
                events.drain(..excess);
                table
                    .insert(guid.as_str(), encode(&events)?.as_slice())
                    .map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            Ok(())
        })
        .await
    }

    /// The app's events, oldest first.
    pub async fn events(&self, app_guid: &str) -> ApiResult<Vec<AppEvent>> {
        let guid = app_guid.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(EVENTS).map_err(storage)?;
            let found = table.get(guid.as_str()).map_err(storage)?;
            Ok(match found {
                Some(v) => decode(&guid, v.value())?,
                None => Vec::new(),
            })
        })
        .await
    }

    pub async fn delete_events(&self, app_guid: &str) -> ApiResult<()> {
        let guid = app_guid.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            {
                let mut table = txn.open_table(EVENTS).map_err(storage)?;
                table.remove(guid.as_str()).map_err(storage)?;
            }
            txn.commit().map_err(storage)?;
            Ok(())
        })
        .await
    }

    /// The buildpacks in position order.
    pub async fn buildpacks(&self) -> ApiResult<Vec<Buildpack>> {
        self.blocking(|db| {
            let txn = db.begin_read().map_err(storage)?;
            let table = txn.open_table(META).map_err(storage)?;
            let found = table.get(BUILDPACKS_KEY).map_err(storage)?;
            Ok(match found {
                Some(v) => decode(BUILDPACKS_KEY, v.value())?,
                None => Vec::new(),
            })
        })
        .await
    }

    /// Changes the buildpack list in one transaction; the list is stored in position order.
    pub async fn update_buildpacks<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Vec<Buildpack>) -> ApiResult<T> + Send + 'static,
    ) -> ApiResult<T> {
        self.blocking(move |db| {
            let txn = db.begin_write().map_err(storage)?;
            let out = {
                let mut table = txn.open_table(META).map_err(storage)?;
                let mut list: Vec<Buildpack> = match table.get(BUILDPACKS_KEY).map_err(storage)? {
                    Some(v) => decode(BUILDPACKS_KEY, v.value())?,
                    None => Vec::new(),
                };
                let out = f(&mut list)?;
                list.sort_by_key(|b| b.position);
                table
                    .insert(BUILDPACKS_KEY, encode(&list)?.as_slice())
                    .map_err(storage)?;
                out
            };
            txn.commit().map_err(storage)?;
            Ok(out)
        })
        .await
    }
}
