//! The HTTP API: Diego's RPC-style routes (`POST /v1/<family>/<verb>[.rN]` with a JSON body),
//! the event streams, store health and the OpenAPI description.
//!
//! **API boundary.** Each route is declared once, in [`routes`], with its request and response
//! types; the router and the OpenAPI document are both built from that table, so the document
//! cannot drift from what is served. Handlers only decode, validate (inside the `Bbs` methods,
//! before any I/O) and encode. Bad input is a 4xx with `{"error": {"type", "message"}}`, never a
//! panic (a panic would be caught and answered with a 500).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};
use diego_model::events::EventFamily;
use diego_model::requests::*;
use diego_model::{BbsError, ErrorType};
use futures::StreamExt;
use serde::Serialize;
use serde::de::DeserializeOwned;
use utoipa::ToSchema;
use utoipa::openapi::path::{
    HttpMethod, OperationBuilder, ParameterBuilder, ParameterIn, PathItem, PathsBuilder,
};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::{
    ComponentsBuilder, ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, RefOr,
    ResponseBuilder, Schema,
};

use crate::Bbs;
use crate::events::{self, EventId, Filter};

type Shared = Arc<Bbs>;

/// One route: its path, what it does, its body types, and the handler.
struct Route {
    path: &'static str,
    summary: &'static str,
    kind: RouteKind,
    /// Adds the request/response schemas (and what they use) to the OpenAPI components.
    schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
    request: Option<String>,
    response: String,
    handler: MethodRouter<Shared>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum RouteKind {
    /// `POST` with a JSON body, JSON answer.
    Rpc,
    /// `GET` (or `POST` with a JSON filter): a `text/event-stream` of events.
    Events,
    /// `GET`, JSON answer.
    Get,
}

fn add_schemas<T: ToSchema>(schemas: &mut Vec<(String, RefOr<Schema>)>) {
    schemas.push((T::name().into_owned(), T::schema()));
    T::schemas(schemas);
}

/// Decodes a request body: `{}` when empty; unknown fields and malformed JSON are a 400 naming
/// the problem.
fn decode<Req: DeserializeOwned>(body: &[u8]) -> Result<Req, BbsError> {
    let body = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        body
    };
    serde_json::from_slice(body)
        .map_err(|e| BbsError::new(ErrorType::InvalidJson, format!("invalid request body: {e}")))
}

/// Reads the body up to `limit` (the configured one unless the route has its own); a larger
/// body is a 413 with a JSON error.
async fn read_body(
    bbs: &Bbs,
    limit: Option<usize>,
    request: Request,
) -> Result<bytes::Bytes, Response> {
    let limit = limit.unwrap_or(bbs.config().max_body_bytes);
    axum::body::to_bytes(request.into_body(), limit)
        .await
        .map_err(|e| {
            let error = BbsError::invalid_request(format!(
                "request body rejected (the limit is {limit} bytes): {e}"
            ));
            error_response_with(StatusCode::PAYLOAD_TOO_LARGE, error)
        })
}

/// What a route answers with: a typed body, or records passed through as stored.
trait Reply: Send + 'static {
    /// The schema the OpenAPI description gives the body.
    type Schema: ToSchema;
    fn into_reply(self) -> Response;
}

impl<T: Serialize + ToSchema + Send + 'static> Reply for T {
    type Schema = T;
    fn into_reply(self) -> Response {
        axum::Json(self).into_response()
    }
}

/// `{"<field>": [record, ...]}` built from records as the store holds them (JSON the BBS wrote),
/// without decoding and re-encoding them: listing 100,000 instances is mostly this copy.
pub(crate) struct JsonList<T> {
    field: &'static str,
    records: Vec<Vec<u8>>,
    /// The listing's turn (see `Config::max_concurrent_listings`), released with the body.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    schema: std::marker::PhantomData<fn() -> T>,
}

impl<T> JsonList<T> {
    pub(crate) fn new(
        field: &'static str,
        records: Vec<Vec<u8>>,
        permit: Option<tokio::sync::OwnedSemaphorePermit>,
    ) -> Self {
        Self {
            field,
            records,
            permit,
            schema: std::marker::PhantomData,
        }
    }
}

/// A listing's body with its turn: the permit goes when hyper drops the bytes, i.e. once the
/// last byte was written (or the client went away), so a slow reader still counts.
struct HeldBody {
    body: Vec<u8>,
    _permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

impl AsRef<[u8]> for HeldBody {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

impl<T: ToSchema + 'static> Reply for JsonList<T> {
    type Schema = T;
    fn into_reply(self) -> Response {
        let size = self.records.iter().map(|r| r.len() + 1).sum::<usize>() + self.field.len() + 8;
        let mut body = Vec::with_capacity(size);
        body.extend_from_slice(b"{\"");
        body.extend_from_slice(self.field.as_bytes());
        body.extend_from_slice(b"\":[");
        for (i, record) in self.records.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            body.extend_from_slice(record);
        }
        body.extend_from_slice(b"]}");
        let body = bytes::Bytes::from_owner(HeldBody {
            body,
            _permit: self.permit,
        });
        (
            [(axum::http::header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    }
}

fn rpc<Req, Resp, F, Fut>(path: &'static str, summary: &'static str, call: F) -> Route
where
    Req: DeserializeOwned + ToSchema + Send + 'static,
    Resp: Reply,
    F: Fn(Shared, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, BbsError>> + Send + 'static,
{
    rpc_with_limit(path, summary, None, call)
}

/// Like [`rpc`], accepting bodies up to `body_limit` instead of the configured limit.
fn rpc_with_limit<Req, Resp, F, Fut>(
    path: &'static str,
    summary: &'static str,
    body_limit: Option<usize>,
    call: F,
) -> Route
where
    Req: DeserializeOwned + ToSchema + Send + 'static,
    Resp: Reply,
    F: Fn(Shared, Req) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Resp, BbsError>> + Send + 'static,
{
    let handler = move |State(bbs): State<Shared>, request: Request| {
        let call = call.clone();
        async move {
            let body = match read_body(&bbs, body_limit, request).await {
                Ok(body) => body,
                Err(response) => return response,
            };
            let outcome = match decode::<Req>(&body) {
                Ok(req) => call(bbs, req).await,
                Err(e) => Err(e),
            };
            match outcome {
                Ok(resp) => resp.into_reply(),
                Err(e) => error_response(e),
            }
        }
    };
    Route {
        path,
        summary,
        kind: RouteKind::Rpc,
        schemas: |s| {
            add_schemas::<Req>(s);
            add_schemas::<Resp::Schema>(s);
        },
        request: Some(Req::name().into_owned()),
        response: <Resp::Schema as ToSchema>::name().into_owned(),
        handler: post(handler),
    }
}

fn error_response(error: BbsError) -> Response {
    let status =
        StatusCode::from_u16(error.kind.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    error_response_with(status, error)
}

fn error_response_with(status: StatusCode, error: BbsError) -> Response {
    if status.is_server_error() {
        tracing::warn!(%status, error = %error, "request failed");
    } else {
        tracing::debug!(%status, error = %error, "request refused");
    }
    (status, axum::Json(ErrorResponse { error })).into_response()
}

/// Query of the event routes: the cell filter and a resume point, for clients that cannot set
/// headers (browsers' EventSource sets `Last-Event-ID` itself on reconnects).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
struct EventsQuery {
    cell_id: Option<String>,
    last_event_id: Option<String>,
}

fn events_route(
    path: &'static str,
    summary: &'static str,
    families: &'static [EventFamily],
) -> Route {
    async fn handle(
        bbs: Shared,
        families: &'static [EventFamily],
        query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
        headers: HeaderMap,
        request: Request,
    ) -> Response {
        let query = match query {
            Ok(Query(q)) => q,
            Err(e) => {
                return error_response(BbsError::invalid_request(format!("invalid query: {e}")));
            }
        };
        // A POST may carry Diego's `{"cell_id": ...}` filter in its body.
        let body = match read_body(&bbs, None, request).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let body_filter: EventsRequest = match decode(&body) {
            Ok(filter) => filter,
            Err(e) => return error_response(e),
        };
        let cell_id = query
            .cell_id
            .or((!body_filter.cell_id.is_empty()).then_some(body_filter.cell_id));
        let resume = headers
            .get("last-event-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or(query.last_event_id)
            .filter(|s| !s.is_empty());
        let after = match resume.map(|s| s.parse::<EventId>()).transpose() {
            Ok(after) => after,
            Err(e) => return error_response(e),
        };
        let filter = Filter {
            families: families.to_vec(),
            cell_id,
        };
        let Ok(permit) = bbs.subscribers.clone().try_acquire_owned() else {
            return error_response(BbsError::new(
                ErrorType::Unavailable,
                format!(
                    "too many event subscribers (the limit is {}); try again later",
                    bbs.config().max_subscribers
                ),
            ));
        };
        // Where this stream starts, for a subscriber cut off before it got any event: every
        // event of the current revision is one it need not see.
        let start = match after {
            Some(after) => after,
            None => match bbs.store().revision().await {
                Ok(revision) => EventId {
                    revision,
                    position: u32::MAX,
                },
                Err(e) => {
                    return error_response_with(
                        StatusCode::SERVICE_UNAVAILABLE,
                        crate::db::read_error(e),
                    );
                }
            },
        };
        let stream = match events::subscribe(bbs.store().as_ref(), after, filter).await {
            Ok(stream) => stream,
            Err(e) => {
                let status = if e.kind == ErrorType::ResourceNotFound {
                    StatusCode::GONE
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                return error_response_with(status, e);
            }
        };
        let shutdown = bbs.shutdown.clone();
        let config = bbs.config();
        let sse = events::bounded(
            stream,
            start,
            config.subscriber_buffer,
            config.subscriber_stall_timeout,
            shutdown.clone(),
            permit,
        )
        .take_until(shutdown.cancelled_owned())
        .map(|item| -> Result<SseEvent, Infallible> {
            Ok(match item {
                events::Delivery::Event(id, event) => SseEvent::default()
                    .id(id.to_string())
                    .event(event.name())
                    .json_data(&event)
                    .unwrap_or_else(|e| SseEvent::default().event("error").data(e.to_string())),
                // The watch broke (the store went away): say so; the client reconnects with its
                // last id and misses nothing.
                events::Delivery::Error(e) => {
                    SseEvent::default().event("error").data(e.to_string())
                }
                events::Delivery::CutOff {
                    resume_after,
                    reason,
                } => SseEvent::default()
                    .event(events::CUT_OFF_EVENT)
                    .json_data(serde_json::json!({
                        "resume_after": resume_after.to_string(),
                        "reason": reason,
                    }))
                    .unwrap_or_else(|e| SseEvent::default().event("error").data(e.to_string())),
            })
        });
        Sse::new(sse)
            .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
            .into_response()
    }
    let on_get = move |State(bbs): State<Shared>, query, headers: HeaderMap, request: Request| {
        handle(bbs, families, query, headers, request)
    };
    let on_post = on_get;
    Route {
        path,
        summary,
        kind: RouteKind::Events,
        schemas: |s| {
            add_schemas::<EventsRequest>(s);
            add_schemas::<diego_model::Event>(s);
        },
        request: Some(EventsRequest::name().into_owned()),
        response: <diego_model::Event as ToSchema>::name().into_owned(),
        handler: get(on_get).post(on_post),
    }
}

/// Every route of the API, in one table.
fn routes() -> Vec<Route> {
    use diego_model::*;
    vec![
        rpc(
            "/v1/ping",
            "Is the BBS up?",
            |_bbs: Shared, _: EmptyRequest| async { Ok(PingResponse { available: true }) },
        ),
        // domains
        rpc(
            "/v1/domains/upsert",
            "Mark a domain fresh for a TTL",
            |bbs: Shared, req: UpsertDomainRequest| async move {
                bbs.upsert_domain(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/domains/list",
            "List fresh domains",
            |bbs: Shared, _: EmptyRequest| async move {
                Ok(DomainsResponse {
                    domains: bbs.domains().await?,
                })
            },
        ),
        // desired LRPs
        rpc(
            "/v1/desired_lrp/desire.r2",
            "Desire an LRP (creates its instances)",
            |bbs: Shared, req: DesireLrpRequest| async move {
                bbs.desire_lrp(req.desired_lrp)
                    .await
                    .map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/desired_lrp/update",
            "Update instances, routes or annotation of a desired LRP",
            |bbs: Shared, req: UpdateDesiredLrpRequest| async move {
                bbs.update_desired_lrp(req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/desired_lrp/remove",
            "Remove a desired LRP and retire its instances",
            |bbs: Shared, req: RemoveDesiredLrpRequest| async move {
                req.validate()?;
                bbs.remove_desired_lrp(&req.process_guid)
                    .await
                    .map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/desired_lrps/list.r3",
            "List desired LRPs, by domain or process guids",
            |bbs: Shared, req: DesiredLrpsRequest| async move {
                let permit = bbs.listing_permit().await;
                let records = bbs.desired_lrps_json(&req).await?;
                Ok(JsonList::<DesiredLrpsResponse>::new(
                    "desired_lrps",
                    records,
                    permit,
                ))
            },
        ),
        rpc(
            "/v1/desired_lrps/get_by_process_guid.r3",
            "Get one desired LRP",
            |bbs: Shared, req: DesiredLrpByProcessGuidRequest| async move {
                req.validate()?;
                Ok(DesiredLrpResponse {
                    desired_lrp: bbs.desired_lrp(&req.process_guid).await?.record,
                })
            },
        ),
        rpc(
            "/v1/desired_lrp_scheduling_infos/list",
            "List scheduling infos of desired LRPs",
            |bbs: Shared, req: DesiredLrpsRequest| async move {
                Ok(DesiredLrpSchedulingInfosResponse {
                    desired_lrp_scheduling_infos: bbs.scheduling_infos(&req).await?,
                })
            },
        ),
        rpc(
            "/v1/desired_lrp_scheduling_infos/get_by_process_guid",
            "Get the scheduling info of one desired LRP",
            |bbs: Shared, req: DesiredLrpByProcessGuidRequest| async move {
                req.validate()?;
                Ok(DesiredLrpSchedulingInfoResponse {
                    desired_lrp_scheduling_info: bbs
                        .desired_lrp(&req.process_guid)
                        .await?
                        .record
                        .scheduling_info(),
                })
            },
        ),
        rpc(
            "/v1/desired_lrp_routing_infos/list",
            "List routing infos of desired LRPs",
            |bbs: Shared, req: DesiredLrpsRequest| async move {
                Ok(DesiredLrpsResponse {
                    desired_lrps: bbs
                        .desired_lrps(&req)
                        .await?
                        .iter()
                        .map(DesiredLrp::routing_info)
                        .collect(),
                })
            },
        ),
        // actual LRPs
        rpc(
            "/v1/actual_lrps/list",
            "List actual LRPs, by domain, cell, process guid and index",
            |bbs: Shared, req: ActualLrpsRequest| async move {
                req.validate()?;
                let permit = bbs.listing_permit().await;
                let records = bbs.actual_lrps_json(&req).await?;
                Ok(JsonList::<ActualLrpsResponse>::new(
                    "actual_lrps",
                    records,
                    permit,
                ))
            },
        ),
        rpc(
            "/v1/actual_lrps/list_by_process_guids",
            "List actual LRPs of several process guids",
            |bbs: Shared, req: ActualLrpsByProcessGuidsRequest| async move {
                let mut p = diego_model::validate::Problems::new();
                p.records(
                    "process_guids",
                    req.process_guids.len(),
                    bbs.config().max_records_per_request,
                );
                for guid in &req.process_guids {
                    p.guid("process_guids[]", guid);
                }
                p.into_request_result()?;
                Ok(ActualLrpsResponse {
                    actual_lrps: bbs.actual_lrps_by_process_guids(&req.process_guids).await?,
                })
            },
        ),
        rpc(
            "/v1/actual_lrps/claim",
            "A rep claims an instance",
            |bbs: Shared, req: ClaimActualLrpRequest| async move {
                bbs.claim_actual_lrp(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/actual_lrps/start.r1",
            "A rep reports an instance running",
            |bbs: Shared, req: StartActualLrpRequest| async move {
                bbs.start_actual_lrp(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/actual_lrps/crash",
            "A rep reports an instance crashed",
            |bbs: Shared, req: CrashActualLrpRequest| async move {
                bbs.crash_actual_lrp(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/actual_lrps/fail",
            "The auctioneer records a placement failure",
            |bbs: Shared, req: FailActualLrpRequest| async move {
                bbs.fail_actual_lrp(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/actual_lrps/remove",
            "Remove an instance",
            |bbs: Shared, req: RemoveActualLrpRequest| async move {
                bbs.remove_actual_lrp(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/actual_lrps/retire",
            "Stop an instance for good",
            |bbs: Shared, req: RetireActualLrpRequest| async move {
                req.validate()?;
                bbs.retire_actual_lrp(&req.actual_lrp_key)
                    .await
                    .map(|()| EmptyResponse {})
            },
        ),
        // evacuation
        rpc(
            "/v1/actual_lrps/evacuate_claimed",
            "Evacuate a claimed instance",
            |bbs: Shared, req: EvacuateActualLrpRequest| async move { bbs.evacuate_claimed(&req).await },
        ),
        rpc(
            "/v1/actual_lrps/evacuate_running.r1",
            "Evacuate a running instance",
            |bbs: Shared, req: EvacuateRunningActualLrpRequest| async move {
                bbs.evacuate_running(&req).await
            },
        ),
        rpc(
            "/v1/actual_lrps/evacuate_stopped",
            "An evacuating instance stopped",
            |bbs: Shared, req: EvacuateActualLrpRequest| async move { bbs.evacuate_stopped(&req).await },
        ),
        rpc(
            "/v1/actual_lrps/evacuate_crashed",
            "An evacuating instance crashed",
            |bbs: Shared, req: EvacuateCrashedActualLrpRequest| async move {
                bbs.evacuate_crashed(&req).await
            },
        ),
        rpc(
            "/v1/actual_lrps/remove_evacuating",
            "Remove an evacuating copy",
            |bbs: Shared, req: EvacuateActualLrpRequest| async move {
                bbs.remove_evacuating(&req).await.map(|()| EmptyResponse {})
            },
        ),
        // tasks
        rpc(
            "/v1/tasks/desire.r2",
            "Desire a task",
            |bbs: Shared, req: DesireTaskRequest| async move {
                bbs.desire_task(req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/tasks/start",
            "A rep starts a task",
            |bbs: Shared, req: StartTaskRequest| async move { bbs.start_task(&req).await },
        ),
        rpc(
            "/v1/tasks/cancel",
            "Cancel a task",
            |bbs: Shared, req: TaskGuidRequest| async move {
                req.validate()?;
                bbs.cancel_task(&req.task_guid)
                    .await
                    .map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/tasks/fail",
            "Fail a task (deprecated in Diego; kept)",
            |bbs: Shared, req: FailTaskRequest| async move {
                bbs.fail_task(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/tasks/reject",
            "A task could not be placed or started",
            |bbs: Shared, req: RejectTaskRequest| async move {
                bbs.reject_task(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/tasks/complete",
            "A rep completes a task",
            |bbs: Shared, req: CompleteTaskRequest| async move {
                bbs.complete_task(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/tasks/resolving",
            "Mark a completed task as being resolved",
            |bbs: Shared, req: TaskGuidRequest| async move {
                req.validate()?;
                bbs.resolving_task(&req.task_guid)
                    .await
                    .map(|_| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/tasks/delete",
            "Delete a resolving task",
            |bbs: Shared, req: TaskGuidRequest| async move {
                req.validate()?;
                bbs.delete_task(&req.task_guid)
                    .await
                    .map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/tasks/list.r3",
            "List tasks, by domain or cell",
            |bbs: Shared, req: TasksRequest| async move {
                let permit = bbs.listing_permit().await;
                let records = bbs.tasks_json(&req).await?;
                Ok(JsonList::<TasksResponse>::new("tasks", records, permit))
            },
        ),
        rpc(
            "/v1/tasks/get_by_task_guid.r3",
            "Get one task",
            |bbs: Shared, req: TaskGuidRequest| async move {
                req.validate()?;
                Ok(TaskResponse {
                    task: bbs.task(&req.task_guid).await?.record,
                })
            },
        ),
        // cells and locks
        rpc(
            "/v1/cells/list.r1",
            "List cells whose presence is alive",
            |bbs: Shared, _: EmptyRequest| async move {
                Ok(CellsResponse {
                    cells: bbs.cells().await?,
                })
            },
        ),
        rpc(
            "/v1/locks/lock",
            "Take or renew a lock or a cell presence",
            |bbs: Shared, req: LockRequest| async move {
                bbs.lock(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/locks/release",
            "Release a lock or presence",
            |bbs: Shared, req: ReleaseLockRequest| async move {
                bbs.release_lock(&req).await.map(|()| EmptyResponse {})
            },
        ),
        rpc(
            "/v1/locks/fetch",
            "Who holds a lock",
            |bbs: Shared, req: FetchLockRequest| async move {
                Ok(FetchLockResponse {
                    resource: bbs.fetch_lock(&req.key, LockType::Lock).await?,
                })
            },
        ),
        rpc(
            "/v1/locks/fetch_all",
            "List locks and presences",
            |bbs: Shared, req: FetchAllLocksRequest| async move {
                Ok(FetchAllLocksResponse {
                    resources: bbs.fetch_all_locks(req.lock_type).await?,
                })
            },
        ),
        // convergence and the auction policy (the brain calls these)
        rpc(
            "/v1/converge",
            "Run one convergence pass (Diego's ConvergeLRPs and ConvergeTasks)",
            |bbs: Shared, _: EmptyRequest| async move { bbs.converge().await },
        ),
        rpc_with_limit(
            "/v1/auction_policy/get",
            "The auction policy every brain places with (none until set)",
            Some(crate::MAX_POLICY_BODY_BYTES),
            |bbs: Shared, _: EmptyRequest| async move {
                Ok(AuctionPolicyResponse {
                    policy: bbs.auction_policy().await?,
                })
            },
        ),
        rpc_with_limit(
            "/v1/auction_policy/set",
            "Record the auction policy: a built-in by name, or a Wasm component (base64, with its sha256)",
            Some(crate::MAX_POLICY_BODY_BYTES),
            |bbs: Shared, req: SetAuctionPolicyRequest| async move {
                bbs.set_auction_policy(req.policy)
                    .await
                    .map(|()| EmptyResponse {})
            },
        ),
        // lifecycles (beyond Diego: components in the blob store, recorded here)
        rpc(
            "/v1/lifecycles/list",
            "Every lifecycle an operator added, with its versions",
            |bbs: Shared, _: EmptyRequest| async move {
                Ok(LifecyclesResponse {
                    lifecycles: bbs.lifecycles().await?,
                })
            },
        ),
        rpc(
            "/v1/lifecycles/get",
            "One added lifecycle by name",
            |bbs: Shared, req: LifecycleByNameRequest| async move {
                Ok(LifecycleResponse {
                    lifecycle: bbs.lifecycle(&req.name).await?,
                })
            },
        ),
        rpc(
            "/v1/lifecycles/add_version",
            "Add a version to a lifecycle (creating it) and make it current",
            |bbs: Shared, req: AddLifecycleVersionRequest| async move {
                Ok(LifecycleResponse {
                    lifecycle: bbs.add_lifecycle_version(&req.name, req.version).await?,
                })
            },
        ),
        rpc(
            "/v1/lifecycles/remove",
            "Remove an added lifecycle",
            |bbs: Shared, req: LifecycleByNameRequest| async move {
                Ok(LifecycleResponse {
                    lifecycle: bbs.remove_lifecycle(&req.name).await?,
                })
            },
        ),
        // events
        events_route(
            "/v1/events/lrp_instances.r1",
            "Desired and actual LRP events (SSE); filter by cell_id",
            &[EventFamily::Lrp],
        ),
        events_route(
            "/v1/events/tasks.r1",
            "Task events (SSE)",
            &[EventFamily::Task],
        ),
        events_route(
            "/v1/events/cells",
            "Cell presence events (SSE)",
            &[EventFamily::Cell],
        ),
        events_route(
            "/v1/events",
            "Every event (SSE)",
            &[EventFamily::Lrp, EventFamily::Task, EventFamily::Cell],
        ),
        // store
        Route {
            path: "/v1/store/health",
            summary: "The store's members and whether it runs degraded",
            kind: RouteKind::Get,
            schemas: add_schemas::<StoreHealthResponse>,
            request: None,
            response: StoreHealthResponse::name().into_owned(),
            handler: get(|State(bbs): State<Shared>| async move {
                match bbs.store_health().await {
                    Ok(health) => axum::Json(health).into_response(),
                    Err(e) => error_response(e),
                }
            }),
        },
    ]
}

/// The OpenAPI 3.1 description of the API, built from the same table as the router.
pub fn openapi() -> OpenApi {
    let mut paths = PathsBuilder::new();
    let mut schemas = Vec::new();
    add_schemas::<ErrorResponse>(&mut schemas);
    for route in routes() {
        (route.schemas)(&mut schemas);
        let json = |name: &str| {
            ContentBuilder::new()
                .schema(Some(Ref::from_schema_name(name)))
                .build()
        };
        let ok = match route.kind {
            RouteKind::Events => ResponseBuilder::new()
                .description(
                    "A text/event-stream; each event's name is its type and its data this JSON",
                )
                .content("text/event-stream", json(&route.response)),
            RouteKind::Rpc | RouteKind::Get => ResponseBuilder::new()
                .description("Success")
                .content("application/json", json(&route.response)),
        };
        let error = |d: &str| {
            ResponseBuilder::new()
                .description(d)
                .content("application/json", json("ErrorResponse"))
                .build()
        };
        let mut operation = OperationBuilder::new()
            .summary(Some(route.summary))
            .operation_id(Some(
                route.path.trim_start_matches('/').replace(['/', '.'], "_"),
            ))
            .response("200", ok.build())
            .response(
                "400",
                error("Invalid request: malformed JSON, unknown fields, failed validation"),
            )
            .response("404", error("Resource not found"))
            .response(
                "409",
                error("Conflict: state transition refused, record exists or changed, lock held"),
            )
            .response("413", error("Request body too large"))
            .response("503", error("Store unavailable; nothing was written"))
            .response(
                "504",
                error("Outcome unknown: the store did not confirm a write"),
            );
        if let Some(request) = &route.request {
            operation = operation.request_body(Some(
                RequestBodyBuilder::new()
                    .content("application/json", json(request))
                    .build(),
            ));
        }
        let item = match route.kind {
            RouteKind::Rpc => PathItem::new(HttpMethod::Post, operation),
            RouteKind::Get => PathItem::new(HttpMethod::Get, operation),
            RouteKind::Events => {
                let query = |name: &str, d: &str| {
                    ParameterBuilder::new()
                        .name(name)
                        .parameter_in(ParameterIn::Query)
                        .description(Some(d))
                        .build()
                };
                let header = ParameterBuilder::new()
                    .name("Last-Event-ID")
                    .parameter_in(ParameterIn::Header)
                    .description(Some("Resume after this event id"))
                    .build();
                let operation = operation
                    .parameter(query("cell_id", "Only events concerning this cell"))
                    .parameter(query("last_event_id", "Resume after this event id"))
                    .parameter(header);
                let built = operation.build();
                let mut item = PathItem::new(HttpMethod::Get, built.clone());
                item.post = Some(built);
                item
            }
        };
        paths = paths.path(route.path, item);
    }
    schemas.sort_by(|a, b| a.0.cmp(&b.0));
    schemas.dedup_by(|a, b| a.0 == b.0);
    OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("diego BBS")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "The Bulletin Board System: Diego's records, their state machines and events.",
                )),
        )
        .paths(paths)
        .components(Some(
            ComponentsBuilder::new().schemas_from_iter(schemas).build(),
        ))
        .build()
}

/// The API router, ready to serve, with `GET /metrics` (see `diego_telemetry`).
pub fn router(bbs: Arc<Bbs>) -> Router {
    let mut router = Router::new();
    for route in routes() {
        router = router.route(route.path, route.handler);
    }
    let spec = Arc::new(openapi());
    let router = router
        .route(
            "/v1/openapi.json",
            get(move || async move { axum::Json(spec.as_ref().clone()) }),
        )
        .fallback(|request: Request<Body>| async move {
            error_response(BbsError::not_found(format!(
                "no route {} {}",
                request.method(),
                request.uri().path()
            )))
        })
        .method_not_allowed_fallback(|request: Request<Body>| async move {
            error_response_with(
                StatusCode::METHOD_NOT_ALLOWED,
                BbsError::invalid_request(format!(
                    "{} is not allowed on {}",
                    request.method(),
                    request.uri().path()
                )),
            )
        })
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(
            |_: Box<dyn std::any::Any + Send>| {
                error_response_with(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    BbsError::new(
                        ErrorType::UnknownError,
                        "internal error (a bug): see the BBS log",
                    ),
                )
            },
        ))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(bbs);
    // Diego's route names are these paths (`/v1/desired_lrp/desire.r2` is
    // `DesireDesiredLRPRoute_r2`), so they are the `route` label as they are.
    diego_telemetry::instrument(router, "bbs")
}

impl std::fmt::Debug for Route {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Route").field("path", &self.path).finish()
    }
}
