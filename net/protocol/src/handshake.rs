//! The handshake (HELLO → HELLO_OK) and the ERROR frame. Invariant: a connection carries no
//! REQUEST before a HELLO_OK, and nothing at all after an ERROR frame (the sender closes).

use super::codes::ErrorCode;
use super::limits::ERROR_MESSAGE_SIZE_MAX_BYTES;
use super::wire::{
    put_str16, put_str16_lossy, put_str8, put_u16, put_u32, put_u64, put_u8, DecodeError,
    EncodeError, Reader,
};

/// A node's role in replication, as HELLO_OK carries it (and as every layer above sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Standby,
}

impl Role {
    /// The contract's name of the role.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Standby => "standby",
        }
    }
}

/// HELLO: `u16 token_len`, token bytes (empty: no token), `u8 name_len`, client name (free
/// text for logs, may be empty), and optionally `u16 shard`: bind the connection to that shard
/// ([`ANY_SHARD`]: one the server picks). The protocol version is the frame header's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hello<'a> {
    pub token: &'a [u8],
    pub client_name: &'a str,
    /// The shard to bind to; `None`: a plain connection, served off the shards.
    pub shard: Option<u16>,
}

/// HELLO's `shard` asking the server to pick the shard (the least bound one).
pub const ANY_SHARD: u16 = u16::MAX;

impl<'a> Hello<'a> {
    pub fn decode(payload: &'a [u8]) -> Result<Hello<'a>, DecodeError> {
        let mut reader = Reader::new(payload);
        let token_len = usize::from(reader.u16("token")?);
        let token = reader.bytes(token_len, "token")?;
        let client_name = reader.str8("client name")?;
        let shard = if reader.remaining() == 0 { None } else { Some(reader.u16("shard")?) };
        reader.finish()?;
        Ok(Hello { token, client_name, shard })
    }

    pub fn encode(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        let len = u16::try_from(self.token.len())
            .map_err(|_| EncodeError { field: "token".into(), len: self.token.len() })?;
        put_u16(buf, len);
        buf.extend_from_slice(self.token);
        put_str8(buf, self.client_name, "client name")?;
        if let Some(shard) = self.shard {
            put_u16(buf, shard);
        }
        Ok(())
    }
}

/// How partitions map to shards, as HELLO_OK names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardRule {
    /// FNV-1a (64 bits) of the partition name's bytes, modulo the shard count.
    Fnv1a64Mod = 1,
}

/// The shard `partition` belongs to under `rule` among `shards` shards.
pub fn shard_of(rule: ShardRule, partition: &str, shards: u16) -> u16 {
    match rule {
        // Below `shards`, a u16.
        ShardRule::Fnv1a64Mod => bookd_engine::shard_of(partition, usize::from(shards)) as u16,
    }
}

/// What HELLO_OK adds for a connection that asked to be bound to a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Binding {
    /// The shard this connection is served on: its commands for this shard never leave the
    /// shard's thread; the others are forwarded to their shards.
    pub shard: u16,
    pub rule: ShardRule,
}

/// HELLO_OK: the node's role and epoch, and the limits the client must respect; for a HELLO
/// that asked for a shard, the shard the connection is bound to and the partition rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloOk {
    pub role: Role,
    pub epoch: u64,
    pub shards: u16,
    /// Largest REQUEST frame the server accepts (the length prefix's value), in bytes.
    pub frame_size_max_bytes: u32,
    /// Most commands in one REQUEST frame (1 000).
    pub commands_per_frame_max: u16,
    /// Most REQUEST frames in flight on one connection; the server stops reading beyond.
    pub in_flight_max: u32,
    /// Present exactly when the HELLO carried `shard`.
    pub binding: Option<Binding>,
}

impl HelloOk {
    pub fn decode(payload: &[u8]) -> Result<HelloOk, DecodeError> {
        let mut reader = Reader::new(payload);
        let role = match reader.u8("role")? {
            0 => Role::Primary,
            1 => Role::Standby,
            other => return Err(DecodeError::UnknownValue("role", u64::from(other))),
        };
        let mut hello = HelloOk {
            role,
            epoch: reader.u64("epoch")?,
            shards: reader.u16("shards")?,
            frame_size_max_bytes: reader.u32("frame_size_max")?,
            commands_per_frame_max: reader.u16("commands_per_frame_max")?,
            in_flight_max: reader.u32("in_flight_max")?,
            binding: None,
        };
        if reader.remaining() > 0 {
            let shard = reader.u16("shard")?;
            let rule = match reader.u8("shard_rule")? {
                1 => ShardRule::Fnv1a64Mod,
                other => return Err(DecodeError::UnknownValue("shard_rule", u64::from(other))),
            };
            hello.binding = Some(Binding { shard, rule });
        }
        reader.finish()?;
        Ok(hello)
    }

    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u8(
            buf,
            match self.role {
                Role::Primary => 0,
                Role::Standby => 1,
            },
        );
        put_u64(buf, self.epoch);
        put_u16(buf, self.shards);
        put_u32(buf, self.frame_size_max_bytes);
        put_u16(buf, self.commands_per_frame_max);
        put_u32(buf, self.in_flight_max);
        if let Some(binding) = self.binding {
            put_u16(buf, binding.shard);
            put_u8(buf, binding.rule as u8);
        }
    }
}

/// ERROR: `u8 code`, `u16 message_len`, UTF-8 message. Sent instead of HELLO_OK (refused
/// handshake) or at any time for a malformed frame; the connection is closed after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorFrame {
    pub code: ErrorCode,
    pub message: String,
}

impl ErrorFrame {
    pub fn decode(payload: &[u8]) -> Result<ErrorFrame, DecodeError> {
        let mut reader = Reader::new(payload);
        let code = reader.u8("code")?;
        let code =
            ErrorCode::from_u8(code).ok_or(DecodeError::UnknownValue("code", u64::from(code)))?;
        let message = reader.str16("message")?.to_owned();
        reader.finish()?;
        Ok(ErrorFrame { code, message })
    }

    /// Appends the payload; a message over 1 KiB is cut at a char boundary.
    pub fn encode(&self, buf: &mut Vec<u8>) {
        put_u8(buf, self.code as u8);
        put_str16_lossy(buf, &self.message, ERROR_MESSAGE_SIZE_MAX_BYTES);
    }

    /// Encodes with an exact message (for tests and re-encoding); `Err` if too long.
    pub fn encode_exact(&self, buf: &mut Vec<u8>) -> Result<(), EncodeError> {
        put_u8(buf, self.code as u8);
        put_str16(buf, &self.message, "message")
    }
}
