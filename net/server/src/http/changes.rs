//! `GET /v1/changes`: the change feed over HTTP, as a JSON page (long poll with `wait_ms`) or as
//! server-sent events (`Accept: text/event-stream`, resumed with `Last-Event-ID`).

use std::time::Duration;

use bookd_feed::{
    Cursor, FeedChange, FeedError, FeedPage, FeedRequest, FEED_LIMIT_DEFAULT, FEED_LIMIT_MAX,
    FEED_WAIT_MS_MAX,
};
use bytes::Bytes;
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use super::json::{ApiError, Detail};
use super::router::percent_decode;

/// How often an idle event stream sends a comment, so proxies and clients see it is alive.
pub const SSE_HEARTBEAT: Duration = Duration::from_secs(5);

/// The query of `GET /v1/changes`, parsed: `cursor`, `partition`, `limit`, `wait_ms`. An unknown
/// or repeated parameter is `bad_request`; a malformed cursor or a value out of range `invalid`.
pub fn changes_query(query: Option<&str>, shards: usize) -> Result<FeedRequest, ApiError> {
    let mut request = FeedRequest {
        cursor: None,
        partition: None,
        limit: FEED_LIMIT_DEFAULT,
        wait: Duration::ZERO,
    };
    let mut seen = [false; 4];
    for pair in query.unwrap_or("").split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let key = percent_decode(key, true);
        let value = percent_decode(value, true);
        let slot = match &*key {
            "cursor" => 0,
            "partition" => 1,
            "limit" => 2,
            "wait_ms" => 3,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter `{key}` (expected cursor, partition, limit, wait_ms)"
                )))
            }
        };
        if std::mem::replace(&mut seen[slot], true) {
            return Err(ApiError::bad_request(format!("query parameter `{key}` given twice")));
        }
        match slot {
            0 => request.cursor = Some(parse_cursor(&value, shards)?),
            1 => {
                if bookd_engine::name_problem(&value).is_some() {
                    return Err(ApiError::invalid(
                        "partition",
                        "must be 1 to 64 bytes of A-Z a-z 0-9 . _ : @ -",
                    ));
                }
                request.partition = Some(value.into_owned());
            }
            2 => {
                request.limit = number(&value)
                    .filter(|limit| (1..=FEED_LIMIT_MAX as u64).contains(limit))
                    .ok_or_else(|| ApiError::invalid("limit", LIMIT_RULE))?
                    as usize;
            }
            _ => {
                let wait_ms = number(&value)
                    .filter(|wait_ms| *wait_ms <= FEED_WAIT_MS_MAX)
                    .ok_or_else(|| ApiError::invalid("wait_ms", WAIT_RULE))?;
                request.wait = Duration::from_millis(wait_ms);
            }
        }
    }
    Ok(request)
}

const LIMIT_RULE: &str = "must be an integer between 1 and 1000";
const WAIT_RULE: &str = "must be an integer between 0 and 30000";
const _: () = assert!(FEED_LIMIT_MAX == 1000 && FEED_WAIT_MS_MAX == 30_000);

fn number(value: &str) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    value.parse().ok()
}

/// A cursor from the query or from `Last-Event-ID`.
pub fn parse_cursor(text: &str, shards: usize) -> Result<Cursor, ApiError> {
    Cursor::parse(text, shards)
        .map_err(|_| ApiError::invalid("cursor", "not a cursor of this feed"))
}

/// The reply to a failed read: 410 with the oldest cursor, or 503.
pub fn feed_error(error: &FeedError) -> ApiError {
    match error {
        FeedError::Expired { oldest } => ApiError {
            status: 410,
            code: "cursor_expired",
            message: "the feed no longer has changes that old: list, then follow from the \
                      listing's cursor"
                .into(),
            detail: Detail::Oldest(oldest.to_string()),
        },
        other => ApiError::unavailable(other.to_string()),
    }
}

/// `{"changes":[…], "cursor"}`.
pub struct PageJson<'a>(pub &'a FeedPage);

impl Serialize for PageJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Changes<'a>(&'a FeedPage);
        impl Serialize for Changes<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut seq = serializer.serialize_seq(Some(self.0.changes.len()))?;
                let mut walk = self.0.walk();
                while let Some((cursor, change)) = walk.next() {
                    seq.serialize_element(&ChangeJson { cursor, change })?;
                }
                seq.end()
            }
        }
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("changes", &Changes(self.0))?;
        map.serialize_entry("cursor", &self.0.cursor.to_string())?;
        map.end()
    }
}

/// One change: `{"cursor","partition","at_ms","op","hold"?,"resources":[…],"removed"?}`.
pub struct ChangeJson<'a> {
    /// The cursor just after the change.
    pub cursor: &'a Cursor,
    pub change: &'a FeedChange,
}

impl Serialize for ChangeJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let change = &**self.change.change;
        let partition = change.partition.as_str();
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("cursor", &self.cursor.to_string())?;
        map.serialize_entry("partition", partition)?;
        map.serialize_entry("at_ms", &change.at_ms)?;
        map.serialize_entry("op", change.op.as_str())?;
        if let Some(hold) = &change.hold {
            map.serialize_entry("hold", &HoldJson { partition, hold })?;
        }
        map.serialize_entry(
            "resources",
            &ResourcesJson { partition, resources: &change.resources },
        )?;
        if let Some(removed) = change.removed {
            map.serialize_entry(
                "removed",
                &serde_json::json!({"resources": removed.resources, "holds": removed.holds}),
            )?;
        }
        map.end()
    }
}

struct HoldJson<'a> {
    partition: &'a str,
    hold: &'a bookd_engine::change::ChangedHold,
}

impl Serialize for HoldJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        struct Item<'a>(&'a (String, u32));
        impl Serialize for Item<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let mut map = serializer.serialize_map(Some(2))?;
                map.serialize_entry("resource", &self.0 .0)?;
                map.serialize_entry("quantity", &self.0 .1)?;
                map.end()
            }
        }
        struct Items<'a>(&'a [(String, u32)]);
        impl Serialize for Items<'_> {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_seq(self.0.iter().map(Item))
            }
        }
        let hold = self.hold;
        let mut map = serializer.serialize_map(Some(6))?;
        map.serialize_entry("partition", self.partition)?;
        map.serialize_entry("id", &hold.id)?;
        map.serialize_entry("status", hold.status.as_str())?;
        map.serialize_entry("items", &Items(&hold.items))?;
        map.serialize_entry("expires_at_ms", &hold.expires_at_ms)?;
        map.serialize_entry("ref", &hold.reference)?;
        map.end()
    }
}

struct ResourcesJson<'a> {
    partition: &'a str,
    resources: &'a [bookd_engine::change::ChangedResource],
}

impl Serialize for ResourcesJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.resources.len()))?;
        for resource in self.resources {
            seq.serialize_element(&serde_json::json!({
                "partition": self.partition,
                "id": resource.id,
                "capacity": resource.capacity,
                "held": resource.held,
                "confirmed": resource.confirmed,
                "available": resource.available(),
            }))?;
        }
        seq.end()
    }
}

/// One server-sent event per change: `id:` the cursor after it, `data:` the change.
pub fn sse_events(page: &FeedPage, out: &mut Vec<u8>) {
    let mut walk = page.walk();
    while let Some((cursor, change)) = walk.next() {
        out.extend_from_slice(b"id: ");
        cursor.write_text(out);
        out.extend_from_slice(b"\nevent: change\ndata: ");
        // Serialising these types cannot fail (string keys, finite numbers).
        if serde_json::to_writer(&mut *out, &ChangeJson { cursor, change }).is_err() {
            out.extend_from_slice(b"{}");
        }
        out.extend_from_slice(b"\n\n");
    }
}

/// The body of an event stream: what the stream's task sends, as it comes. The channel is
/// bounded, so a client that reads slowly holds at most a few pages on the node, and its task
/// waits (never a shard).
#[derive(Debug)]
pub struct SseBody {
    events: tokio::sync::mpsc::Receiver<Bytes>,
}

/// Pages an event stream may have sent and not yet written.
const SSE_PAGES_QUEUED_MAX: usize = 4;

impl hyper::body::Body for SseBody {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        self.events
            .poll_recv(cx)
            .map(|event| event.map(|bytes| Ok(hyper::body::Frame::data(bytes))))
    }
}

/// Whether a request asks for the feed as server-sent events.
pub fn wants_events(parts: &hyper::http::request::Parts) -> bool {
    parts.method == hyper::Method::GET
        && parts.uri.path() == "/v1/changes"
        && parts
            .headers
            .get_all(hyper::header::ACCEPT)
            .iter()
            .any(|value| value.to_str().is_ok_and(|text| text.contains("text/event-stream")))
}

/// Starts an event stream: the request parsed (`Last-Event-ID` over `cursor`), the first page
/// read (so an expired or malformed cursor is an ordinary error reply), then a task that sends
/// each page as events and a heartbeat comment while nothing changes, until the client goes or
/// the node stops.
pub async fn start_events(
    app: &std::sync::Arc<super::HttpApp>,
    parts: &hyper::http::request::Parts,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<SseBody, ApiError> {
    let feed = app.feed();
    let mut request = changes_query(parts.uri.query(), feed.shards())?;
    if let Some(last) = parts.headers.get("last-event-id") {
        let text = last.to_str().map_err(|_| ApiError::invalid("Last-Event-ID", "not a cursor"))?;
        request.cursor = Some(parse_cursor(text, feed.shards())?);
    }
    request.limit = FEED_LIMIT_MAX;
    request.wait = Duration::ZERO;
    let first = feed.read(&request).await.map_err(|error| feed_error(&error))?;
    let (sender, events) = tokio::sync::mpsc::channel(SSE_PAGES_QUEUED_MAX);
    let app = app.clone();
    tokio::spawn(async move {
        let mut page = first;
        request.wait = SSE_HEARTBEAT;
        loop {
            let mut out = Vec::new();
            if page.changes.is_empty() {
                out.extend_from_slice(b": heartbeat\n\n");
            } else {
                sse_events(&page, &mut out);
            }
            // A client that reads nothing fills the queue; the node's stop ends the wait.
            let sent = tokio::select! {
                sent = sender.send(Bytes::from(out)) => sent.is_ok(),
                _ = stop.wait_for(|stopping| *stopping) => false,
            };
            if !sent {
                return; // the client went away, or the node stops
            }
            request.cursor = Some(page.cursor.clone());
            let read = tokio::select! {
                read = app.feed().read(&request) => read,
                _ = stop.wait_for(|stopping| *stopping) => return,
            };
            page = match read {
                Ok(page) => page,
                Err(error) => {
                    let error = feed_error(&error);
                    let mut out = b"event: error\ndata: ".to_vec();
                    out.extend_from_slice(&super::json::encode(&error, 128));
                    out.extend_from_slice(b"\n\n");
                    let _ = sender.send(Bytes::from(out)).await;
                    return;
                }
            };
        }
    });
    Ok(SseBody { events })
}
