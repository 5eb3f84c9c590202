//! The listener: accepts connections up to a bound, serves each with hyper's HTTP/1.1, and on
//! shutdown stops accepting, lets in-flight requests finish, and returns.
//!
//! Invariant: every open connection holds one permit of a semaphore of `connections_max`
//! permits, so the bound is exact, and shutdown returns only when every permit is back, that
//! is when every connection (and so every request in flight) has finished.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::handlers::handle;
use super::limits::{HEADERS_MAX, HEAD_SIZE_MAX_BYTES};
use super::HttpApp;

/// Pause after an accept error (out of file descriptors, …) before trying again.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(50);

/// Serves the HTTP API on `listener` until `shutdown` resolves; then stops accepting, closes
/// idle connections, waits for in-flight requests to finish, and returns.
///
/// Accept errors (such as running out of file descriptors) are logged and retried after a
/// short pause, so the result is `Ok` unless the listener itself is unusable.
pub async fn serve_http(
    listener: TcpListener,
    app: Arc<HttpApp>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // Shutdown takes every permit back in one `acquire_many`, which counts in u32.
    let connections_max =
        app.config().connections_max.clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(connections_max));
    let (stop_sender, stop) = watch::channel(false);
    let address = listener.local_addr()?;
    tracing::info!(%address, connections_max, "HTTP API listening");
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
                tokio::spawn(serve_connection(stream, app.clone(), permit, stop.clone()));
            }
            Err(error) => {
                tracing::warn!(%error, "HTTP accept failed; retrying");
                tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
            }
        }
    }
    drop(listener);
    tracing::info!(%address, "HTTP API stopping: finishing in-flight requests");
    let _ = stop_sender.send(true);
    // Every connection returns its permit when it ends; all back means all done.
    let _ = permits.acquire_many(connections_max as u32).await;
    tracing::info!(%address, "HTTP API stopped");
    Ok(())
}

/// Serves one connection; on shutdown asks hyper to finish the request in flight (if any) and
/// close. The permit is returned last, after every clone of `app` this connection made is
/// dropped, so once all permits are back the caller holds the only references to the app.
async fn serve_connection(
    stream: TcpStream,
    app: Arc<HttpApp>,
    permit: OwnedSemaphorePermit,
    stop: watch::Receiver<bool>,
) {
    app.metrics().connection_opened();
    if let Err(error) = run_connection(stream, &app, stop).await {
        tracing::debug!(%error, "HTTP connection ended with an error");
    }
    app.metrics().connection_closed();
    drop(app);
    drop(permit);
}

async fn run_connection(
    stream: TcpStream,
    app: &Arc<HttpApp>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), hyper::Error> {
    let _ = stream.set_nodelay(true);
    let service_app = app.clone();
    let service = service_fn(move |request| {
        let app = service_app.clone();
        async move { Ok::<_, Infallible>(handle(&app, request).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.config().header_read_timeout)
        .max_buf_size(HEAD_SIZE_MAX_BYTES)
        .max_headers(HEADERS_MAX)
        .keep_alive(true);
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => result,
        () = async { let _ = stop.wait_for(|stopping| *stopping).await; } => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    }
}
