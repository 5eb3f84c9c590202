//! The node's replication over the network: the binary port hands standbys' connections to the
//! primary side (after HELLO and its token check), a standby reaches its primary over TCP with
//! the same handshake, and the HTTP layer sees role, epoch, status and promotion through
//! [`NodeInfo`].
//!
//! Invariant: a standby's connection carries replication messages only after a HELLO with the
//! node's token was accepted; the role the HTTP and binary layers see is the replication role,
//! which turns to primary only after the node accepts writes.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bookd_replication::{Connector, ReplicatedNode, StreamTransport, TransportError};
use bookd_runtime::Runtime;
use tokio::net::TcpStream;
use tokio::sync::watch;

use crate::binary::ReplicationHook;
use crate::http::{NodeInfo, PromoteFuture, Role};
use bookd_client::{connect_one, ClientConfig};

/// How long a standby waits to connect and complete HELLO with its primary.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// [`NodeInfo`] and [`ReplicationHook`] over a [`ReplicatedNode`].
#[derive(Debug, Clone)]
pub struct Replication(pub Arc<ReplicatedNode>);

impl NodeInfo for Replication {
    fn role(&self) -> Role {
        self.0.role()
    }

    fn epoch(&self, runtime: &Runtime) -> u64 {
        runtime.epoch()
    }

    fn status_extras(&self) -> serde_json::Map<String, serde_json::Value> {
        self.0.status_extras()
    }

    fn promote(&self) -> PromoteFuture<'_> {
        Box::pin(async move { self.0.promote().await })
    }

    fn render_metrics(&self, out: &mut String) {
        self.0.render_metrics(out);
    }
}

impl ReplicationHook for Replication {
    fn serve(
        &self,
        stream: TcpStream,
        buffered: Vec<u8>,
        peer: String,
        stop: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let transport = StreamTransport::new(stream, buffered);
        let served = self.0.serve_standby(transport, peer.clone(), stop);
        Box::pin(async move {
            if let Err(error) = served.await {
                tracing::info!(standby = %peer, %error, "replication session ended");
            }
        })
    }
}

/// A standby's way to its primary: TCP to the binary port, HELLO with the token, then
/// replication messages in REPLICATE frames.
#[derive(Debug, Clone)]
pub struct TcpConnector {
    pub addr: String,
    pub token: Option<String>,
}

impl Connector for TcpConnector {
    type Transport = StreamTransport<TcpStream>;

    async fn connect(&self) -> Result<Self::Transport, TransportError> {
        let config = ClientConfig {
            token: self.token.clone(),
            client_name: "bookd-standby".into(),
            connect_timeout: CONNECT_TIMEOUT,
            ..ClientConfig::default()
        };
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect_one(&self.addr, &config))
            .await
            .map_err(|_| TransportError::ConnectTimeout { addr: self.addr.clone() })?;
        let (stream, hello) = connected.map_err(|error| TransportError::Connect {
            addr: self.addr.clone(),
            source: Box::new(error),
        })?;
        if hello.role != Role::Primary {
            return Err(TransportError::NotPrimary { addr: self.addr.clone() });
        }
        Ok(StreamTransport::new(stream, Vec::new()))
    }

    fn describe(&self) -> String {
        self.addr.clone()
    }
}
