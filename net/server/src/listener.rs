//! The accept loop both servers (HTTP and binary) share: a connection limit (a semaphore permit
//! per connection), accept errors retried after a pause, and a clean stop — stop accepting, tell
//! every connection to finish what is in flight, and return once every permit is back.
//!
//! Invariant: when this returns, every connection task has ended (each returns its permit last).

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

/// Pause after a failed accept (e.g. out of file descriptors) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts connections on `listener` until `shutdown` resolves, at most `connections_max` at
/// once, running `serve(stream, permit, stop)` for each on its own task. `stop` turns true at
/// shutdown; a connection keeps `permit` until it has finished. `what` names the server in logs.
pub async fn serve_connections<S, F>(
    listener: TcpListener,
    what: &'static str,
    connections_max: usize,
    shutdown: impl Future<Output = ()>,
    serve: S,
) -> io::Result<()>
where
    S: Fn(TcpStream, OwnedSemaphorePermit, watch::Receiver<bool>) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    // Shutdown takes every permit back in one `acquire_many`, which counts in u32.
    let connections_max = connections_max.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(connections_max));
    let (stop_sender, stop) = watch::channel(false);
    let address = listener.local_addr()?;
    tracing::info!(%address, connections_max, "{what} listening");
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            biased;
            () = &mut shutdown => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed while this loop runs
            },
        };
        let accepted = tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _peer)) => {
                tokio::spawn(serve(stream, permit, stop.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "{what}: accept failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    tracing::info!(%address, "{what} stopping: finishing in-flight requests");
    let _ = stop_sender.send(true);
    // Every connection returns its permit when it ends; all back means all done.
    let _ = permits.acquire_many(connections_max as u32).await;
    tracing::info!(%address, "{what} stopped");
    Ok(())
}
