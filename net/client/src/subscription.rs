//! The change feed for gateways: [`Subscription`], an async stream of changes on a connection of
//! its own that resumes after a reconnect from the last change it handed out, so the caller sees
//! every change once, in order, across lost connections and node restarts.

use std::time::Duration;

use bookd_protocol::frame::{self, Kind};
use bookd_protocol::limits::FRAME_SIZE_CAP_BYTES;
use bookd_protocol::subscribe::{decode_changes_frame, encode_credit, CursorChange, Subscribe};
use bookd_protocol::{ErrorCode, ErrorFrame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connection::connect_one;
use crate::{ClientConfig, ClientError};

/// Changes granted to the node at a time: it sends no more until they are consumed.
const CREDIT_WINDOW: u32 = 1024;
/// Longest wait between reconnection attempts.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(2);
/// The request id of the subscription on its connection.
const SUBSCRIPTION_ID: u64 = 1;

/// A subscription to a node's change feed. [`Subscription::next`] hands out one change at a
/// time; the connection is its own and is made again whenever it is lost.
#[derive(Debug)]
pub struct Subscription {
    addr: String,
    config: ClientConfig,
    partition: Option<String>,
    /// The position after the last change handed out ("" before any: the feed's end).
    cursor: String,
    stream: Option<TcpStream>,
    rbuf: Vec<u8>,
    ready: std::collections::VecDeque<CursorChange>,
    /// Changes received since credit was last granted.
    consumed: u32,
    /// Connections made, for tests and metrics.
    connects: u64,
}

impl Subscription {
    /// Follows the feed of the node at `addr` after `cursor` (`None`: from its current end),
    /// of one `partition` or of all.
    pub fn new(
        addr: &str,
        config: ClientConfig,
        cursor: Option<&str>,
        partition: Option<&str>,
    ) -> Subscription {
        Subscription {
            addr: addr.to_string(),
            config,
            partition: partition.map(str::to_owned),
            cursor: cursor.unwrap_or("").to_string(),
            stream: None,
            rbuf: Vec::new(),
            ready: std::collections::VecDeque::new(),
            consumed: 0,
            connects: 0,
        }
    }

    /// The position after the last change handed out: resume from here.
    pub fn cursor(&self) -> &str {
        &self.cursor
    }

    /// How many connections the subscription made.
    pub fn connects(&self) -> u64 {
        self.connects
    }

    /// The next change. Lost connections are made again (the node may be restarting), and the
    /// subscription resumes after the last change handed out. Errs only when the node refuses
    /// the subscription: `cursor_expired` (list, then follow from a listing's cursor), `invalid`
    /// or `unauthorized`.
    pub async fn next(&mut self) -> Result<CursorChange, ClientError> {
        let mut backoff = Duration::from_millis(10);
        loop {
            if let Some(change) = self.ready.pop_front() {
                self.cursor.clone_from(&change.cursor);
                return Ok(change);
            }
            match self.receive().await {
                Ok(()) => backoff = Duration::from_millis(10),
                Err(error @ ClientError::Server(_)) => return Err(error),
                Err(_) => {
                    self.stream = None;
                    self.ready.clear();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(RECONNECT_BACKOFF_MAX);
                }
            }
        }
    }

    /// Connects if needed, then reads one CHANGES frame into `ready` (granting more credit
    /// when half the window is used).
    async fn receive(&mut self) -> Result<(), ClientError> {
        if self.stream.is_none() {
            self.open().await?;
        }
        let stream = self.stream.as_mut().ok_or(ClientError::Closed)?;
        let (kind, request_id, payload) = read_frame(stream, &mut self.rbuf).await?;
        match kind {
            Kind::Changes if request_id == SUBSCRIPTION_ID => {
                let (_, changes) = decode_changes_frame(&payload)
                    .map_err(|error| ClientError::Protocol(format!("CHANGES: {error}")))?;
                self.consumed = self.consumed.saturating_add(changes.len() as u32);
                self.ready.extend(changes);
                if self.consumed >= CREDIT_WINDOW / 2 {
                    let mut bytes = Vec::new();
                    let start = frame::begin(&mut bytes, Kind::Credit, SUBSCRIPTION_ID);
                    encode_credit(self.consumed, &mut bytes);
                    frame::finish(&mut bytes, start);
                    stream.write_all(&bytes).await.map_err(io_error)?;
                    self.consumed = 0;
                }
                Ok(())
            }
            Kind::Error => {
                let error = ErrorFrame::decode(&payload)
                    .map_err(|error| ClientError::Protocol(format!("ERROR: {error}")))?;
                // A node that is stopping or failed: reconnect; a refusal: the caller's.
                if matches!(error.code, ErrorCode::Unavailable) {
                    return Err(ClientError::Unavailable(error.message));
                }
                Err(ClientError::Server(error))
            }
            other => Err(ClientError::Protocol(format!("unexpected {other:?} frame"))),
        }
    }

    async fn open(&mut self) -> Result<(), ClientError> {
        let (mut stream, _hello) = connect_one(&self.addr, &self.config).await?;
        let mut bytes = Vec::new();
        let start = frame::begin(&mut bytes, Kind::Subscribe, SUBSCRIPTION_ID);
        let subscribe = Subscribe {
            cursor: &self.cursor,
            partition: self.partition.as_deref(),
            credit: CREDIT_WINDOW,
        };
        subscribe.encode(&mut bytes).map_err(ClientError::invalid)?;
        frame::finish(&mut bytes, start);
        stream.write_all(&bytes).await.map_err(io_error)?;
        self.connects += 1;
        self.consumed = 0;
        self.rbuf.clear();
        self.stream = Some(stream);
        Ok(())
    }
}

fn io_error(error: std::io::Error) -> ClientError {
    ClientError::Io(std::sync::Arc::new(error))
}

/// Reads one whole frame (bounded by the protocol's cap): its kind, request id and payload.
async fn read_frame(
    stream: &mut TcpStream,
    rbuf: &mut Vec<u8>,
) -> Result<(Kind, u64, Vec<u8>), ClientError> {
    loop {
        match frame::parse(rbuf, FRAME_SIZE_CAP_BYTES) {
            Ok(Some((parsed, used))) => {
                let result = (parsed.kind, parsed.request_id, parsed.payload.to_vec());
                rbuf.drain(..used);
                return Ok(result);
            }
            Ok(None) => {}
            Err(error) => return Err(ClientError::Protocol(error.to_string())),
        }
        let mut chunk = [0u8; 64 * 1024];
        let read = stream.read(&mut chunk).await.map_err(io_error)?;
        if read == 0 {
            return Err(ClientError::Unavailable("the node closed the connection".into()));
        }
        rbuf.extend_from_slice(&chunk[..read]);
    }
}
