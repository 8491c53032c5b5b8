//! The etcd store: a [`diego_store::Store`] backend on etcd v3 (tested against etcd 3.4).
//!
//! # Mapping
//!
//! The store trait copies etcd's model, so each operation is one etcd request:
//!
//! | [`Store`]      | etcd                                                                   |
//! |----------------|------------------------------------------------------------------------|
//! | `get`          | `Range` of one key (linearizable)                                      |
//! | `list`         | `Range` over the prefix; the listing's revision is the header's        |
//! | `txn`          | `Txn` of `mod_revision(key) == rev` compares (0 = absent) and put (with lease) / delete ops; `Committed { revision: header.revision }` or `CompareFailed` |
//! | `grant_lease`  | `LeaseGrant`, the TTL rounded up to whole seconds (at least 1)         |
//! | `keep_alive`   | one `LeaseKeepAlive` round trip; TTL 0 in the answer = `LeaseNotFound` |
//! | `revoke_lease` | `LeaseRevoke`; "requested lease not found" = `LeaseNotFound`           |
//! | `watch`        | `Watch` on the prefix with `prev_kv` from `from_revision` (0 = from the revision it was created at + 1) |
//! | `revision`     | the header revision of a count-only `Range` of one key                 |
//! | `health`       | `MemberList`, then `Status` from each member over a connection of its own: healthy if it answers, has a leader and reports no alarm |
//!
//! Transactions are checked with [`diego_store::validate_txn`] first so that both backends refuse
//! the same requests. A watch waits for etcd to confirm its creation before it is returned (so
//! "from now" really means from then), delivers the changes of one revision in key order, and
//! when its stream breaks (the member died, lost its leader, closed the stream) it is opened
//! again on any member from one past the last revision it delivered; only if that fails for a
//! whole request timeout does the stream yield an error and end. A watch from a compacted
//! revision yields [`StoreError::Compacted`] and ends.
//!
//! # Failures and the outcome-unknown rule
//!
//! Every request runs under the request timeout ([`EtcdOptions::request_timeout`]) and is retried
//! within it as far as that is safe:
//!
//! - a request that certainly was not applied — the client could not connect to the member it
//!   picked, or the member refused it up front ("no leader", "too many requests") — is sent again,
//!   to any member; the client balances over every endpoint, so this is how it fails over when a
//!   member dies;
//! - reads are retried on any transient failure; when the time is up they fail with
//!   [`StoreError::Unavailable`];
//! - **a mutating request (transaction, revoke) that failed after it may have been sent** — a
//!   timeout, a reset connection, an etcd "request timed out" or "leader changed" — fails at once
//!   with [`StoreError::OutcomeUnknown`]: it may still be committed (a put proposed before a
//!   quorum loss can be applied after), so it must not be reported as a clean failure nor retried
//!   blindly (a retried compare-and-swap would fail against its own first write). Never is such a
//!   request mapped to `CompareFailed`;
//! - lease grants and keep-alives are harmless to repeat and are retried like reads, but end in
//!   `OutcomeUnknown` if an attempt may have been applied;
//! - a request etcd refused (invalid, too large, unknown lease) maps to
//!   [`StoreError::InvalidRequest`], [`StoreError::LeaseNotFound`] or [`StoreError::Backend`].
//!
//! The client asks etcd to require a leader, so a member cut off from the quorum refuses
//! requests (and cancels watches) once it has noticed, instead of holding them until they time
//! out.
//!
//! # etcd behaviour to know about (3.4)
//!
//! - When the leader dies, a write a follower had forwarded to it is neither applied nor
//!   refused: the follower holds it until etcd's own timeout (5 s + 2 election timeouts), so the
//!   store's request timeout ends it first, as `OutcomeUnknown`. Writes sent after the kill go
//!   through once a new leader is elected (about 1.2 to 3 s with a 1 s election timeout).
//! - etcd raises a lease's TTL to at least 1.5 election timeouts (2 s with the default 1 s).
//! - etcd refuses HTTP/2 pings more often than every 5 s or while no stream is open, so the
//!   client pings every 10 s and only during requests; a member that vanishes without closing
//!   its connections (a network partition, not a crash) holds the requests sent to it until the
//!   request timeout.
//!
//! An [`EtcdStore`] belongs to the tokio runtime it was connected in (the gRPC channel runs a task
//! there); connect once per runtime.

use std::fmt;
use std::time::Duration;

use diego_store::{
    KeyValue, LeaseId, Listing, MemberHealth, Op, Revision, Store, StoreError, StoreHealth, Txn,
    TxnOutcome, WatchStream,
};
use etcd_client::{
    Client, ClusterClient, Compare, CompareOp, ConnectOptions, GetOptions, KvClient, LeaseClient,
    PutOptions, TxnOp, WatchClient,
};

mod call;
mod watch;

use call::{Failure, Kind};

/// How to talk to etcd.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// How long one store request may take, retries included (default 5 s).
    pub request_timeout: Duration,
    /// How long to wait for a TCP connection to a member (default 2 s).
    pub connect_timeout: Duration,
    /// How long [`Store::health`] waits for each member (default 1 s).
    pub health_timeout: Duration,
    /// The largest response accepted, e.g. a big listing (default 256 MiB; gRPC's default is 4).
    pub max_response_bytes: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            health_timeout: Duration::from_secs(1),
            max_response_bytes: 256 << 20,
        }
    }
}

/// Why [`EtcdStore::connect`] failed.
#[derive(Debug, thiserror::Error)]
pub enum EtcdStoreError {
    #[error("no etcd endpoints given")]
    NoEndpoints,
    #[error("invalid etcd endpoints {endpoints:?}: {reason}")]
    InvalidEndpoint {
        endpoints: Vec<String>,
        reason: String,
    },
    #[error("cannot reach etcd at {endpoints:?}: {source}")]
    Unreachable {
        endpoints: Vec<String>,
        #[source]
        source: StoreError,
    },
    #[error("etcd client: {0}")]
    Client(#[from] etcd_client::Error),
}

/// The etcd backend of [`Store`]. Cheap to clone; clones share the connections.
#[derive(Clone)]
pub struct EtcdStore {
    client: Client,
    kv: KvClient,
    lease: LeaseClient,
    watch: WatchClient,
    cluster: ClusterClient,
    endpoints: Vec<String>,
    options: EtcdOptions,
}

impl fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// The key a [`Store::revision`] reads (counting only): any key would do.
const REVISION_PROBE_KEY: &[u8] = b"\0";

impl EtcdStore {
    /// Connects to the etcd cluster at `endpoints` (`http://host:port` or `host:port`; list every
    /// member so that requests fail over when one dies) and checks that it answers.
    pub async fn connect(
        endpoints: &[String],
        options: EtcdOptions,
    ) -> Result<EtcdStore, EtcdStoreError> {
        if endpoints.is_empty() {
            return Err(EtcdStoreError::NoEndpoints);
        }
        let connect_options = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            // etcd's keep-alive policy refuses pings more often than every 5 s, and any ping
            // without an open stream.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false)
            .with_require_leader(true);
        let client = Client::connect(endpoints, Some(connect_options))
            .await
            .map_err(|e| match e {
                etcd_client::Error::InvalidUri(_) | etcd_client::Error::InvalidArgs(_) => {
                    EtcdStoreError::InvalidEndpoint {
                        endpoints: endpoints.to_vec(),
                        reason: e.to_string(),
                    }
                }
                e => EtcdStoreError::Client(e),
            })?;
        let store = EtcdStore {
            kv: client
                .kv_client()
                .max_decoding_message_size(options.max_response_bytes),
            watch: client
                .watch_client()
                .max_decoding_message_size(options.max_response_bytes),
            lease: client.lease_client(),
            cluster: client.cluster_client(),
            client,
            endpoints: endpoints.to_vec(),
            options,
        };
        store
            .revision()
            .await
            .map_err(|source| EtcdStoreError::Unreachable {
                endpoints: endpoints.to_vec(),
                source,
            })?;
        tracing::info!(endpoints = ?store.endpoints, "connected to etcd");
        Ok(store)
    }

    /// The endpoints this store was connected with.
    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    /// The options this store was connected with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// The underlying etcd client, for what the store trait does not cover (e.g. compaction).
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    async fn run<T, F, Fut>(&self, what: &str, kind: Kind, attempt: F) -> Result<T, StoreError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        call::run(what, kind, self.options.request_timeout, attempt).await
    }

    /// The store's view of one member: its status fetched on a connection of its own.
    async fn probe(&self, name: String, endpoint: Option<String>) -> (MemberHealth, bool) {
        let Some(endpoint) = endpoint else {
            let health = MemberHealth {
                name,
                endpoint: String::new(),
                healthy: false,
                leader: false,
                error: Some("not started".into()),
            };
            return (health, false);
        };
        let timeout = self.options.health_timeout;
        let status = tokio::time::timeout(timeout, async {
            let options = ConnectOptions::new()
                .with_connect_timeout(timeout)
                .with_timeout(timeout)
                .with_keep_alive_while_idle(false);
            let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
            client.status().await
        })
        .await;
        let mut health = MemberHealth {
            name,
            endpoint,
            healthy: false,
            leader: false,
            error: None,
        };
        match status {
            Ok(Ok(status)) => {
                let id = status
                    .header()
                    .map_or(0, etcd_client::ResponseHeader::member_id);
                health.leader = status.leader() != 0 && status.leader() == id;
                if status.leader() == 0 {
                    health.error = Some("no leader".into());
                } else if !status.errors().is_empty() {
                    health.error = Some(status.errors().join("; "));
                } else {
                    health.healthy = true;
                }
                (health, true)
            }
            Ok(Err(e)) => {
                health.error = Some(call::describe(&e));
                (health, false)
            }
            Err(_) => {
                health.error = Some(format!("no answer within {timeout:?}"));
                (health, false)
            }
        }
    }
}

/// Converts an etcd key-value.
pub(crate) fn convert_kv(kv: &etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let key = kv
        .key_str()
        .map_err(|e| StoreError::Backend(format!("etcd key is not UTF-8: {e}")))?;
    Ok(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        lease: lease_of(kv.lease()),
    })
}

/// Converts an etcd key-value without copying its value.
fn into_kv(kv: etcd_client::KeyValue) -> Result<KeyValue, StoreError> {
    let (create_revision, mod_revision, lease) = (
        kv.create_revision(),
        kv.mod_revision(),
        lease_of(kv.lease()),
    );
    let (key, value) = kv.into_key_value();
    let key = String::from_utf8(key)
        .map_err(|e| StoreError::Backend(format!("etcd key is not UTF-8: {e}")))?;
    Ok(KeyValue {
        key,
        value,
        create_revision,
        mod_revision,
        lease,
    })
}

fn lease_of(id: i64) -> Option<LeaseId> {
    (id != 0).then_some(LeaseId(id))
}

fn header_revision(header: Option<&etcd_client::ResponseHeader>) -> Result<Revision, Failure> {
    header
        .map(etcd_client::ResponseHeader::revision)
        .ok_or_else(|| Failure::Final(StoreError::Backend("etcd response without a header".into())))
}

/// Whether etcd said the lease named in the request does not exist.
fn is_lease_not_found(err: &etcd_client::Error) -> bool {
    match err {
        etcd_client::Error::GRpcStatus(status) => {
            status.code() == tonic::Code::NotFound && status.message().contains("lease not found")
        }
        etcd_client::Error::LeaseKeepAliveError(message) => message.contains("lease not found"),
        _ => false,
    }
}

/// Rounds a TTL up to whole seconds, at least one.
fn ttl_seconds(ttl: Duration) -> i64 {
    let secs = ttl
        .as_secs()
        .saturating_add(u64::from(ttl.subsec_nanos() > 0))
        .max(1);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn etcd_txn(txn: &Txn) -> etcd_client::Txn {
    let compares: Vec<Compare> = txn
        .compares
        .iter()
        .map(|c| match c {
            diego_store::Compare::ModRevision { key, revision } => {
                Compare::mod_revision(key.as_str(), CompareOp::Equal, *revision)
            }
        })
        .collect();
    let ops: Vec<TxnOp> = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value, lease } => TxnOp::put(
                key.as_str(),
                value.clone(),
                lease.map(|l| PutOptions::new().with_lease(l.0)),
            ),
            Op::Delete { key } => TxnOp::delete(key.as_str(), None),
        })
        .collect();
    etcd_client::Txn::new().when(compares).and_then(ops)
}

#[async_trait::async_trait]
impl Store for EtcdStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let mut response = self
            .run("get", Kind::Read, || {
                let mut kv = self.kv.clone();
                async move { kv.get(key, None).await.map_err(Failure::from_etcd) }
            })
            .await?;
        response
            .take_kvs()
            .into_iter()
            .next()
            .map(into_kv)
            .transpose()
    }

    async fn list(&self, prefix: &str) -> Result<Listing, StoreError> {
        let mut response = self
            .run("list", Kind::Read, || {
                let mut kv = self.kv.clone();
                async move {
                    kv.get(prefix, Some(GetOptions::new().with_prefix()))
                        .await
                        .map_err(Failure::from_etcd)
                }
            })
            .await?;
        let revision = header_revision(response.header()).map_err(final_error)?;
        let kvs = response
            .take_kvs()
            .into_iter()
            .map(into_kv)
            .collect::<Result<_, _>>()?;
        Ok(Listing { kvs, revision })
    }

    async fn txn(&self, txn: Txn) -> Result<TxnOutcome, StoreError> {
        diego_store::validate_txn(&txn)?;
        let request = etcd_txn(&txn);
        let first_lease = txn.ops.iter().find_map(|op| match op {
            Op::Put {
                lease: Some(lease), ..
            } => Some(*lease),
            _ => None,
        });
        let response = self
            .run("txn", Kind::Write, || {
                let mut kv = self.kv.clone();
                let request = request.clone();
                async move {
                    kv.txn(request).await.map_err(|e| match first_lease {
                        Some(lease) if is_lease_not_found(&e) => {
                            Failure::Final(StoreError::LeaseNotFound(lease))
                        }
                        _ => Failure::from_etcd(e),
                    })
                }
            })
            .await?;
        if response.succeeded() {
            let revision = header_revision(response.header()).map_err(final_error)?;
            Ok(TxnOutcome::Committed { revision })
        } else {
            Ok(TxnOutcome::CompareFailed)
        }
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        let ttl = ttl_seconds(ttl);
        let response = self
            .run("grant lease", Kind::Idempotent, || {
                let mut lease = self.lease.clone();
                async move { lease.grant(ttl, None).await.map_err(Failure::from_etcd) }
            })
            .await?;
        if !response.error().is_empty() {
            return Err(StoreError::Backend(format!(
                "etcd refused the lease: {}",
                response.error()
            )));
        }
        Ok(LeaseId(response.id()))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.run("keep lease alive", Kind::Idempotent, || {
            let mut client = self.lease.clone();
            async move {
                match client.keep_alive(lease.0).await {
                    // One round trip is all we want: dropping the keeper closes the stream.
                    Ok((_keeper, _stream)) => Ok(()),
                    Err(e) if is_lease_not_found(&e) => {
                        Err(Failure::Final(StoreError::LeaseNotFound(lease)))
                    }
                    Err(e) => Err(Failure::from_etcd(e)),
                }
            }
        })
        .await
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        self.run("revoke lease", Kind::Write, || {
            let mut client = self.lease.clone();
            async move {
                match client.revoke(lease.0).await {
                    Ok(_) => Ok(()),
                    Err(e) if is_lease_not_found(&e) => {
                        Err(Failure::Final(StoreError::LeaseNotFound(lease)))
                    }
                    Err(e) => Err(Failure::from_etcd(e)),
                }
            }
        })
        .await
    }

    async fn watch(
        &self,
        prefix: &str,
        from_revision: Revision,
    ) -> Result<WatchStream, StoreError> {
        if from_revision < 0 {
            return Err(StoreError::InvalidRequest(format!(
                "negative watch revision {from_revision}"
            )));
        }
        watch::watch(
            self.watch.clone(),
            prefix,
            from_revision,
            self.options.request_timeout,
        )
        .await
    }

    async fn revision(&self) -> Result<Revision, StoreError> {
        self.run("revision", Kind::Read, || {
            let mut kv = self.kv.clone();
            async move {
                let response = kv
                    .get(
                        REVISION_PROBE_KEY,
                        Some(GetOptions::new().with_count_only()),
                    )
                    .await
                    .map_err(Failure::from_etcd)?;
                header_revision(response.header())
            }
        })
        .await
    }

    async fn health(&self) -> Result<StoreHealth, StoreError> {
        let listed = self
            .run("member list", Kind::Read, || {
                let mut cluster = self.cluster.clone();
                async move { cluster.member_list().await.map_err(Failure::from_etcd) }
            })
            .await;
        let members: Vec<(String, Option<String>)> = match listed {
            Ok(list) => list
                .members()
                .iter()
                .map(|m| {
                    let name = if m.name().is_empty() {
                        format!("{:x}", m.id())
                    } else {
                        m.name().to_string()
                    };
                    (name, m.client_urls().first().cloned())
                })
                .collect(),
            Err(e) => {
                tracing::warn!("etcd member list failed, probing the configured endpoints: {e}");
                self.endpoints
                    .iter()
                    .map(|e| (e.clone(), Some(e.clone())))
                    .collect()
            }
        };
        let probes = futures::future::join_all(
            members
                .into_iter()
                .map(|(name, endpoint)| self.probe(name, endpoint)),
        )
        .await;
        if !probes.iter().any(|(_, answered)| *answered) {
            let errors: Vec<String> = probes
                .iter()
                .map(|(m, _)| {
                    format!(
                        "{} ({}): {}",
                        m.name,
                        m.endpoint,
                        m.error.as_deref().unwrap_or("?")
                    )
                })
                .collect();
            return Err(StoreError::Unavailable(format!(
                "no etcd member answers: {}",
                errors.join("; ")
            )));
        }
        Ok(StoreHealth {
            backend: "etcd".into(),
            members: probes.into_iter().map(|(m, _)| m).collect(),
        })
    }
}

fn final_error(failure: Failure) -> StoreError {
    match failure {
        Failure::Final(e) => e,
        Failure::NotApplied(m) | Failure::Transient(m) => StoreError::Backend(m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_round_up_to_whole_seconds() {
        assert_eq!(ttl_seconds(Duration::ZERO), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_secs(1)), 1);
        assert_eq!(ttl_seconds(Duration::from_millis(1001)), 2);
        assert_eq!(ttl_seconds(Duration::from_secs(30)), 30);
        assert_eq!(ttl_seconds(Duration::MAX), i64::MAX);
    }
}
