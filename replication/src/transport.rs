//! The narrow interface between a primary and a standby: send and receive whole replication
//! messages. Implemented by an in-memory channel pair (tests run promotion and divergence
//! in-process from a seed) and by a byte stream (TCP, after the binary protocol's handshake).
//!
//! Invariant: `recv` is cancel-safe (a `select!` that drops it loses no bytes), and both sides
//! bound what they buffer: the memory pair holds at most `MEMORY_TRANSPORT_MESSAGES_MAX`
//! messages each way, a stream at most one message of `MESSAGE_SIZE_MAX_BYTES` plus a chunk.

use std::future::Future;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::limits::{MEMORY_TRANSPORT_MESSAGES_MAX, MESSAGE_SIZE_MAX_BYTES};
use crate::message::{DecodeError, Message};

/// Why a transport stopped.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// Reading or writing the connection failed.
    #[error("connection failed: {0}")]
    Io(#[from] std::io::Error),
    /// The primary at `addr` could not be reached (the error of the connector's client).
    #[error("connection failed: {addr}: {source}")]
    Connect { addr: String, source: Box<dyn std::error::Error + Send + Sync> },
    /// The primary at `addr` did not accept the connection in time.
    #[error("connection failed: {addr}: connect timed out")]
    ConnectTimeout { addr: String },
    /// The node at `addr` is a standby: it serves no standby.
    #[error("connection failed: {addr} is a standby, not a primary")]
    NotPrimary { addr: String },
    /// The peer did not send the handshake's message (`WELCOME`, `SUBSCRIBE`) in time.
    #[error("connection failed: no {0}")]
    NoHandshake(&'static str),
    /// The peer (`primary`, `standby`) said nothing for longer than its silence timeout.
    #[error("connection failed: {0} silent")]
    Silent(&'static str),
    /// A frame whose length cannot hold its header.
    #[error("connection failed: frame length {0} below the header")]
    FrameTooShort(usize),
    /// A frame of a version or kind that carries no replication message.
    #[error("connection failed: unexpected frame: version {version}, kind {kind:#04x}")]
    UnexpectedFrame { version: u8, kind: u8 },
    /// The connection ended inside a frame.
    #[error("connection failed: connection closed in the middle of a frame")]
    Truncated,
    #[error("malformed replication message: {0}")]
    Decode(#[from] DecodeError),
    /// The peer closed the connection with these words (its ERROR frame, its REFUSED).
    #[error("the peer closed the connection: {0}")]
    Closed(String),
    /// The peer closed the connection at the point named (`before WELCOME`, `primary closed`).
    #[error("the peer closed the connection: {0}")]
    Ended(&'static str),
    #[error("replication message of {0} bytes exceeds the limit")]
    TooLarge(usize),
}

/// One end of a replication connection.
pub trait Transport: Send + 'static {
    /// Sends one message (waits while the peer does not keep up).
    fn send(
        &mut self,
        message: &Message,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// The next message; `Ok(None)` once the peer has closed. Cancel-safe.
    fn recv(&mut self) -> impl Future<Output = Result<Option<Message>, TransportError>> + Send;
}

/// How a standby reaches its primary.
pub trait Connector: Send + Sync + 'static {
    type Transport: Transport;
    /// A new connection, past any handshake below replication. `Err` is worth retrying.
    fn connect(&self) -> impl Future<Output = Result<Self::Transport, TransportError>> + Send;
    /// The primary's address, for status and logs.
    fn describe(&self) -> String;
}

/// An in-memory end: encoded messages over bounded channels.
#[derive(Debug)]
pub struct MemoryTransport {
    sender: mpsc::Sender<Vec<u8>>,
    receiver: mpsc::Receiver<Vec<u8>>,
}

impl MemoryTransport {
    /// Two connected ends.
    pub fn pair() -> (MemoryTransport, MemoryTransport) {
        let (a_sender, a_receiver) = mpsc::channel(MEMORY_TRANSPORT_MESSAGES_MAX);
        let (b_sender, b_receiver) = mpsc::channel(MEMORY_TRANSPORT_MESSAGES_MAX);
        (
            MemoryTransport { sender: a_sender, receiver: b_receiver },
            MemoryTransport { sender: b_sender, receiver: a_receiver },
        )
    }
}

impl Transport for MemoryTransport {
    async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        // Encoded, so the in-process tests exercise the byte format too.
        self.sender
            .send(message.to_bytes())
            .await
            .map_err(|_| TransportError::Ended("memory peer dropped"))
    }

    async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        match self.receiver.recv().await {
            Some(bytes) => Ok(Some(Message::decode(&bytes)?)),
            None => Ok(None),
        }
    }
}

/// Frame header of the binary protocol (docs/protocol.md): version 1, kind REPLICATE.
const PROTOCOL_VERSION: u8 = 1;
/// The binary protocol's frame kind carrying one replication message.
pub const KIND_REPLICATE: u8 = 0x10;
/// The binary protocol's ERROR frame kind (the server closing: `u8 code, u16 len, text`).
const KIND_ERROR: u8 = 0xFF;
const HEADER_SIZE_BYTES: usize = 12;
const PREFIX_SIZE_BYTES: usize = 4;
const READ_CHUNK_SIZE_BYTES: usize = 64 * 1024;

/// Replication messages over a byte stream, each in a binary-protocol frame:
/// `u32 len`, `u8 version = 1`, `u8 kind = 0x10`, `u16 reserved = 0`, `u64 request_id = 0`,
/// then the message.
#[derive(Debug)]
pub struct StreamTransport<S> {
    stream: S,
    buffer: Vec<u8>,
    out: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> StreamTransport<S> {
    /// Wraps `stream`; `buffered` holds bytes already read from it (the start of a frame).
    pub fn new(stream: S, buffered: Vec<u8>) -> Self {
        StreamTransport { stream, buffer: buffered, out: Vec::new() }
    }

    /// A whole frame at the start of the buffer, decoded and consumed.
    fn take_frame(&mut self) -> Result<Option<Message>, TransportError> {
        let Some(prefix) = self.buffer.first_chunk::<PREFIX_SIZE_BYTES>() else {
            return Ok(None);
        };
        let len = u32::from_le_bytes(*prefix) as usize;
        if len < HEADER_SIZE_BYTES {
            return Err(TransportError::FrameTooShort(len));
        }
        if len > MESSAGE_SIZE_MAX_BYTES + HEADER_SIZE_BYTES {
            return Err(TransportError::TooLarge(len));
        }
        if self.buffer.len() < PREFIX_SIZE_BYTES + len {
            return Ok(None);
        }
        let frame = &self.buffer[PREFIX_SIZE_BYTES..PREFIX_SIZE_BYTES + len];
        let (header, payload) = frame.split_at(HEADER_SIZE_BYTES);
        let result = match (header[0], header[1]) {
            (PROTOCOL_VERSION, KIND_REPLICATE) => Ok(Some(Message::decode(payload)?)),
            (PROTOCOL_VERSION, KIND_ERROR) => {
                let text = payload.get(3..).map(String::from_utf8_lossy).unwrap_or_default();
                Err(TransportError::Closed(text.into_owned()))
            }
            (version, kind) => Err(TransportError::UnexpectedFrame { version, kind }),
        };
        self.buffer.drain(..PREFIX_SIZE_BYTES + len);
        result
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Transport for StreamTransport<S> {
    async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        self.out.clear();
        self.out.extend_from_slice(&[0; PREFIX_SIZE_BYTES]);
        self.out.extend_from_slice(&[PROTOCOL_VERSION, KIND_REPLICATE, 0, 0]);
        self.out.extend_from_slice(&0u64.to_le_bytes());
        message.encode(&mut self.out);
        let len = self.out.len() - PREFIX_SIZE_BYTES;
        if len > MESSAGE_SIZE_MAX_BYTES + HEADER_SIZE_BYTES {
            return Err(TransportError::TooLarge(len));
        }
        self.out[..PREFIX_SIZE_BYTES].copy_from_slice(&(len as u32).to_le_bytes());
        self.stream.write_all(&self.out).await?;
        self.stream.flush().await?;
        if self.out.capacity() > 2 * READ_CHUNK_SIZE_BYTES {
            self.out = Vec::new();
        }
        Ok(())
    }

    async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            if let Some(message) = self.take_frame()? {
                return Ok(Some(message));
            }
            // `read_buf` into spare capacity is cancel-safe: bytes read are kept in `buffer`.
            self.buffer.reserve(READ_CHUNK_SIZE_BYTES);
            let read = self.stream.read_buf(&mut self.buffer).await?;
            if read == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(TransportError::Truncated)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn a_stream_carries_messages_in_frames() {
        let (a, b) = tokio::io::duplex(1024);
        let mut a = StreamTransport::new(a, Vec::new());
        let mut b = StreamTransport::new(b, Vec::new());
        let big = Message::Records {
            shard: 0,
            first_lsn: 1,
            last_lsn: 1,
            primary_durable_lsn: 1,
            bytes: vec![7; 100_000],
        };
        let sent = big.clone();
        let writer = tokio::spawn(async move {
            a.send(&sent).await.unwrap();
            a.send(&Message::Ack { shard: 1, synced_lsn: 2 }).await.unwrap();
        });
        assert_eq!(b.recv().await.unwrap(), Some(big));
        assert_eq!(b.recv().await.unwrap(), Some(Message::Ack { shard: 1, synced_lsn: 2 }));
        writer.await.unwrap();
        assert_eq!(b.recv().await.unwrap(), None);
    }
}
