//! One handler per route: authenticate, route, read the body within its limits, run the ops
//! on the runtime, and answer with the contract's status and JSON body.
//!
//! Invariant: a request reaches the runtime only once it is authenticated, routed and parsed;
//! every command of a request (a thousand in a batch) goes to the runtime in one `execute`
//! call, so each shard receives one message per request.

use std::time::Instant;

use bookd_engine::{Cancel, Command, Confirm, DeletePartition, Release};
use bookd_engine::{Op, OpResult};
use bookd_runtime::op_index;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};

use super::changes;
use super::json::{self, ApiError, BatchJson, Reply};
use super::limits::{BODY_DRAIN_MAX_BYTES, BODY_SIZE_MAX_BYTES, RETRY_AFTER_S};
use super::metrics::{self, OP_GET_HOLD, OP_GET_RESOURCE, OP_LIST_RESOURCES};
use super::router::{self, decode_segment, Route, Routing};
use super::{auth, HttpApp, PromoteError, Role};

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const PROMETHEUS: HeaderValue =
    HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
const CLOSE: HeaderValue = HeaderValue::from_static("close");
const BEARER: HeaderValue = HeaderValue::from_static("Bearer");

/// The response type of every route.
pub type HttpResponse = Response<Full<Bytes>>;

/// A response with a whole body, or an event stream.
pub type AnyResponse = Response<http_body_util::Either<Full<Bytes>, changes::SseBody>>;

/// Answers one request, streaming `GET /v1/changes` as events when asked to (until `stop`).
pub async fn handle_any(
    app: &std::sync::Arc<HttpApp>,
    request: Request<Incoming>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> AnyResponse {
    use http_body_util::Either;
    let (parts, body) = request.into_parts();
    if !changes::wants_events(&parts) {
        return handle(app, Request::from_parts(parts, body)).await.map(Either::Left);
    }
    let response = match admit(app, &parts) {
        Err(response) => response.map(Either::Left),
        Ok(_) => match changes::start_events(app, &parts, stop).await {
            Ok(events) => {
                let mut response = Response::new(Either::Right(events));
                let headers = response.headers_mut();
                headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
                headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                response
            }
            Err(error) => error_response(&error).map(Either::Left),
        },
    };
    app.metrics().count_response(response.status().as_u16());
    response
}

/// Answers one request. Never fails: every problem is a JSON error response.
pub async fn handle(app: &HttpApp, request: Request<Incoming>) -> HttpResponse {
    let started = Instant::now();
    let response = respond(app, request, started).await;
    app.metrics().count_response(response.status().as_u16());
    response
}

async fn respond(app: &HttpApp, request: Request<Incoming>, started: Instant) -> HttpResponse {
    let (parts, body) = request.into_parts();
    let (route, params) = match admit(app, &parts) {
        Ok(admitted) => admitted,
        Err(response) => return *response,
    };
    let body = if route.reads_body() {
        match read_body(app, &parts.headers, body).await {
            Ok(body) => body,
            Err(error) => {
                let mut response = error_response(&error);
                response.headers_mut().insert(header::CONNECTION, CLOSE);
                return response;
            }
        }
    } else {
        Bytes::new()
    };
    dispatch(app, route, params, parts.uri.query(), &body, started).await
}

/// Authenticates (every path but `/health`), routes, and refuses writes on a standby: the
/// route and its raw path parameters, or the response that ends the request.
fn admit<'p>(
    app: &HttpApp,
    parts: &'p hyper::http::request::Parts,
) -> Result<(Route, [&'p str; router::PARAMS_MAX]), Box<HttpResponse>> {
    let path = parts.uri.path();
    if let (Some(token), true) = (&app.token, path != "/health") {
        if !auth::authorized(&parts.headers, token) {
            return Err(Box::new(error_response(&ApiError::unauthorized())));
        }
    }
    let (route, params) = match router::route(parts.method.as_str(), path) {
        Routing::Found { route, params } => (route, params),
        Routing::WrongMethod { allow } => {
            let error = ApiError::method_not_allowed(format!(
                "{} is not served on {path} (it serves {allow})",
                parts.method
            ));
            let mut response = error_response(&error);
            if let Ok(allow) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, allow);
            }
            return Err(Box::new(response));
        }
        Routing::NotFound => {
            let error = ApiError::not_found(format!("no route {path}"));
            return Err(Box::new(error_response(&error)));
        }
    };
    // The shards refuse writes on a standby; a whole request is refused here, its body unread,
    // on the same flag they read.
    if route.is_write() && !app.runtime.is_writable() {
        return Err(Box::new(error_response(&ApiError::standby_read_only())));
    }
    Ok((route, params))
}

/// Runs an admitted request whose body is read: one arm per route.
async fn dispatch(
    app: &HttpApp,
    route: Route,
    params: [&str; router::PARAMS_MAX],
    query: Option<&str>,
    body: &[u8],
    started: Instant,
) -> HttpResponse {
    let partition = || decode_segment(params[0]).into_owned();
    let second = || decode_segment(params[1]).into_owned();
    if let Some(command) = parse_command(route, params, body) {
        return command_or_error(app, command, started).await;
    }
    match route {
        Route::GetResource => {
            let op = Op::GetResource { partition: partition(), id: second() };
            query_response(app, op, OP_GET_RESOURCE, started).await
        }
        Route::GetHold => {
            let op = Op::GetHold { partition: partition(), id: second() };
            query_response(app, op, OP_GET_HOLD, started).await
        }
        Route::ListResources => match router::list_query(query) {
            Ok(query) => list_response(app, partition(), query, started).await,
            Err(error) => error_response(&error),
        },
        Route::Changes => changes_response(app, query).await,
        Route::Batch => batch(app, body, started).await,
        Route::OpenApi => bytes_response(StatusCode::OK, JSON, app.openapi()),
        Route::Health => health(app),
        Route::Metrics => metrics_response(app),
        Route::Status => status(app).await,
        Route::Promote => match json::no_body(body) {
            Ok(()) => promote(app).await,
            Err(error) => error_response(&error),
        },
        Route::Checkpoint => match json::no_body(body) {
            Ok(()) => checkpoint(app).await,
            Err(error) => error_response(&error),
        },
        // The command routes (`Route::is_command`), parsed and run above.
        _ => error_response(&ApiError::not_found(format!("{route:?}"))),
    }
}

/// The command a command route's request asks for, from its path parameters and body; `None`
/// for the other routes.
fn parse_command(
    route: Route,
    params: [&str; router::PARAMS_MAX],
    body: &[u8],
) -> Option<Result<Command, ApiError>> {
    if !route.is_command() {
        return None;
    }
    let partition = decode_segment(params[0]).into_owned();
    let second = || decode_segment(params[1]).into_owned();
    Some(match route {
        Route::PutResource => json::put_resource(partition, second(), body),
        Route::CreateHold => json::hold(partition, body),
        Route::ConfirmHold => {
            json::no_body(body).map(|()| Command::Confirm(Confirm { partition, hold: second() }))
        }
        Route::ReleaseHold => {
            json::no_body(body).map(|()| Command::Release(Release { partition, hold: second() }))
        }
        Route::CancelHold => {
            json::no_body(body).map(|()| Command::Cancel(Cancel { partition, hold: second() }))
        }
        Route::ExtendHold => json::extend(partition, second(), body),
        Route::DeletePartition => {
            json::no_body(body).map(|()| Command::DeletePartition(DeletePartition { partition }))
        }
        other => Err(ApiError::not_found(format!("{other:?} is not a command"))),
    })
}

/// A parsed command's response, or the parse error's.
async fn command_or_error(
    app: &HttpApp,
    command: Result<Command, ApiError>,
    started: Instant,
) -> HttpResponse {
    match command {
        Ok(command) => command_response(app, command, started).await,
        Err(error) => error_response(&error),
    }
}

/// `/metrics`: the node's metrics, then replication's, in Prometheus text.
fn metrics_response(app: &HttpApp) -> HttpResponse {
    let role = app.node.role();
    let epoch = app.node.epoch(&app.runtime);
    let mut text = metrics::render(app.metrics(), &app.runtime, app.storage(), role, epoch);
    app.feed.metrics().render(&mut text);
    app.node.render_metrics(&mut text);
    bytes_response(StatusCode::OK, PROMETHEUS, Bytes::from(text))
}

/// Reads the whole body: `413` when `Content-Length` or the bytes actually sent exceed the
/// limit, `400` when the client stops sending or is too slow.
///
/// Before a `413`, up to [`BODY_DRAIN_MAX_BYTES`] of the rest of the body are read and
/// dropped (within the body timeout), so the connection closes with nothing unread and the
/// client receives the answer instead of a reset. Larger bodies are not drained, nor are
/// bodies announced with `Expect: 100-continue` (the client waits for the answer before it
/// sends them).
async fn read_body(
    app: &HttpApp,
    headers: &hyper::HeaderMap,
    mut body: Incoming,
) -> Result<Bytes, ApiError> {
    let timeout = app.config.body_read_timeout;
    let declared_bytes = body.size_hint().lower();
    if declared_bytes > BODY_SIZE_MAX_BYTES as u64 {
        let expects_continue = headers
            .get(header::EXPECT)
            .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
        if !expects_continue && declared_bytes <= BODY_DRAIN_MAX_BYTES {
            drain(&mut body, timeout).await;
        }
        return Err(ApiError::payload_too_large());
    }
    let collected = tokio::time::timeout(timeout, async {
        // The usual body arrives as one frame: kept as it is, without a copy.
        let mut first: Option<Bytes> = None;
        let mut joined: Vec<u8> = Vec::new();
        let mut total_bytes = 0;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
                continue; // trailers
            };
            total_bytes += data.len();
            if total_bytes > BODY_SIZE_MAX_BYTES {
                return Err(BodyError::TooLarge);
            }
            match first.take() {
                None if joined.is_empty() => first = Some(data),
                earlier => {
                    if let Some(earlier) = earlier {
                        joined.reserve(BODY_SIZE_MAX_BYTES.min(2 * total_bytes));
                        joined.extend_from_slice(&earlier);
                    }
                    joined.extend_from_slice(&data);
                }
            }
        }
        Ok(first.unwrap_or_else(|| Bytes::from(joined)))
    })
    .await;
    match collected {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(BodyError::TooLarge)) => {
            drain(&mut body, timeout).await;
            Err(ApiError::payload_too_large())
        }
        Ok(Err(BodyError::Read(error))) => {
            Err(ApiError::bad_request(format!("could not read the body: {error}")))
        }
        Err(_) => Err(ApiError::bad_request(format!(
            "request body not received within {} ms",
            timeout.as_millis()
        ))),
    }
}

enum BodyError {
    TooLarge,
    Read(hyper::Error),
}

/// Reads and drops what is left of `body`, at most [`BODY_DRAIN_MAX_BYTES`] and `timeout`.
async fn drain(body: &mut Incoming, timeout: std::time::Duration) {
    let _ = tokio::time::timeout(timeout, async {
        let mut drained_bytes = 0;
        while let Some(Ok(frame)) = body.frame().await {
            if let Some(data) = frame.data_ref() {
                drained_bytes += data.len() as u64;
                if drained_bytes > BODY_DRAIN_MAX_BYTES {
                    break;
                }
            }
        }
    })
    .await;
}

/// Runs one command and answers with its reply.
async fn command_response(app: &HttpApp, command: Command, started: Instant) -> HttpResponse {
    let op = op_index(&command);
    let is_hold = matches!(command, Command::Hold(_));
    let result = execute_one(app, Op::Command(command)).await;
    app.metrics().observe_latency(op, elapsed_us(started));
    reply_response(&Reply::of(result, is_hold))
}

/// A listing, with the feed's position taken before it is read: following the feed from there
/// may repeat a change the page already shows (applying it again converges), never miss one.
async fn list_response(
    app: &HttpApp,
    partition: String,
    query: bookd_engine::ListQuery,
    started: Instant,
) -> HttpResponse {
    let cursor = app.feed.end().to_string();
    let result = execute_one(app, Op::ListResources { partition, query }).await;
    app.metrics().observe_latency(OP_LIST_RESOURCES, elapsed_us(started));
    match Reply::of(result, false) {
        Reply::Page(page, _) => reply_response(&Reply::Page(page, Some(cursor))),
        other => reply_response(&other),
    }
}

/// `GET /v1/changes` as one JSON page (long poll).
async fn changes_response(app: &HttpApp, query: Option<&str>) -> HttpResponse {
    let request = match changes::changes_query(query, app.feed.shards()) {
        Ok(request) => request,
        Err(error) => return error_response(&error),
    };
    match app.feed.read(&request).await {
        Ok(page) => {
            let hint = 64 + page.changes.len() * 320;
            bytes_response(StatusCode::OK, JSON, json::encode(&changes::PageJson(&page), hint))
        }
        Err(error) => error_response(&changes::feed_error(&error)),
    }
}

/// Runs one query and answers with its reply.
async fn query_response(
    app: &HttpApp,
    op: Op,
    latency_op: usize,
    started: Instant,
) -> HttpResponse {
    let result = execute_one(app, op).await;
    app.metrics().observe_latency(latency_op, elapsed_us(started));
    reply_response(&Reply::of(result, false))
}

async fn execute_one(app: &HttpApp, op: Op) -> OpResult {
    app.runtime.execute(vec![op]).await.pop().unwrap_or(OpResult::Unavailable)
}

/// `/v1/batch`: parse every element, send the valid ones in one `execute`, answer in order.
async fn batch(app: &HttpApp, body: &[u8], started: Instant) -> HttpResponse {
    let parsed = match json::batch(body) {
        Ok(parsed) => parsed,
        Err(error) => return error_response(&error),
    };
    app.metrics().observe_batch(parsed.len());
    let mut ops = Vec::with_capacity(parsed.len());
    // Per element: Ok((latency op, is_hold)) for a command sent, Err for an element refused here.
    let mut slots = Vec::with_capacity(parsed.len());
    for element in parsed {
        match element {
            Ok(command) => {
                slots.push(Ok((op_index(&command), matches!(command, Command::Hold(_)))));
                ops.push(Op::Command(command));
            }
            Err(error) => slots.push(Err(error)),
        }
    }
    let mut results = if ops.is_empty() { Vec::new() } else { app.runtime.execute(ops).await };
    let elapsed_us = elapsed_us(started);
    results.reverse();
    let replies: Vec<Reply> = slots
        .into_iter()
        .map(|slot| match slot {
            Ok((op, is_hold)) => {
                app.metrics().observe_latency(op, elapsed_us);
                Reply::of(results.pop().unwrap_or(OpResult::Unavailable), is_hold)
            }
            Err(error) => Reply::Error(error),
        })
        .collect();
    let body = json::encode(&BatchJson(&replies), 64 + replies.len() * 256);
    let mut response = bytes_response(StatusCode::OK, JSON, body);
    if replies.iter().any(|reply| reply.status() == 429) {
        response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
    }
    response
}

fn health(app: &HttpApp) -> HttpResponse {
    // Polled often: formatted directly (the role is a fixed ASCII word, the epoch a number).
    let body = format!(
        r#"{{"status":"ok","role":"{}","epoch":{}}}"#,
        app.node.role().as_str(),
        app.node.epoch(&app.runtime)
    );
    bytes_response(StatusCode::OK, JSON, Bytes::from(body))
}

async fn status(app: &HttpApp) -> HttpResponse {
    let shards: Vec<serde_json::Value> = app
        .runtime
        .status()
        .await
        .into_iter()
        .map(|shard| {
            serde_json::json!({
                "shard": shard.shard,
                "last_lsn": shard.last_lsn,
                "durable_lsn": shard.durable_lsn,
                "clock_ms": shard.clock_ms,
                "partitions": shard.stats.partitions,
                "resources": shard.stats.resources,
                "holds": shard.stats.holds,
                "holds_live": shard.stats.holds_live,
            })
        })
        .collect();
    if shards.len() != app.runtime.shards() {
        return error_response(&ApiError::unavailable("a shard did not answer (node stopping)"));
    }
    let mut body = serde_json::Map::new();
    body.insert("role".into(), app.node.role().as_str().into());
    body.insert("epoch".into(), app.node.epoch(&app.runtime).into());
    body.insert("shards".into(), shards.into());
    for (key, value) in app.node.status_extras() {
        body.entry(key).or_insert(value);
    }
    bytes_response(StatusCode::OK, JSON, json::encode(&body, 512))
}

async fn promote(app: &HttpApp) -> HttpResponse {
    if app.node.role() == Role::Primary {
        return error_response(&ApiError::already_primary());
    }
    match app.node.promote().await {
        Ok(epoch) => {
            let body = serde_json::json!({ "role": "primary", "epoch": epoch });
            bytes_response(StatusCode::OK, JSON, json::encode(&body, 64))
        }
        Err(PromoteError::AlreadyPrimary) => error_response(&ApiError::already_primary()),
        Err(error) => error_response(&ApiError::unavailable(format!("promotion failed: {error}"))),
    }
}

async fn checkpoint(app: &HttpApp) -> HttpResponse {
    match app.runtime.checkpoint().await {
        Ok(positions) => {
            let snapshots: Vec<serde_json::Value> = positions
                .iter()
                .enumerate()
                .map(|(shard, lsn)| serde_json::json!({ "shard": shard, "lsn": lsn }))
                .collect();
            let body = serde_json::json!({ "snapshots": snapshots });
            bytes_response(StatusCode::OK, JSON, json::encode(&body, 256))
        }
        Err(reason) => {
            error_response(&ApiError::unavailable(format!("checkpoint failed: {reason}")))
        }
    }
}

fn elapsed_us(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX)
}

fn reply_response(reply: &Reply) -> HttpResponse {
    match reply {
        Reply::Error(error) => error_response(error),
        _ => {
            let status = StatusCode::from_u16(reply.status()).unwrap_or(StatusCode::OK);
            let hint = match reply {
                Reply::Page(page, _) => 32 + page.resources.len() * 112,
                _ => 256,
            };
            bytes_response(status, JSON, json::encode(reply, hint))
        }
    }
}

/// The JSON error response, with `Retry-After` on 429 and `WWW-Authenticate` on 401.
fn error_response(error: &ApiError) -> HttpResponse {
    let status = StatusCode::from_u16(error.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = bytes_response(status, JSON, json::encode(error, 128));
    match error.status {
        429 => {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_S));
        }
        401 => {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, BEARER);
        }
        _ => {}
    }
    response
}

fn bytes_response(status: StatusCode, content_type: HeaderValue, body: Bytes) -> HttpResponse {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, content_type);
    response
}
