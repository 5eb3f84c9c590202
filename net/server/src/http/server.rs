//! The listener: accepts connections up to a bound, serves each with hyper's HTTP/1.1, and on
//! shutdown stops accepting, lets in-flight requests finish, and returns.
//!
//! Slow clients: hyper's header read timeout bounds a request head and an idle keep-alive
//! connection, the handlers bound a body, and [`WriteStallTimeout`] bounds a response write
//! that makes no progress, so no client holds a connection (and its permit) for ever.
//!
//! Invariant: every open connection holds one permit of a semaphore of `connections_max`
//! permits, so the bound is exact, and shutdown returns only when every permit is back, that
//! is when every connection (and so every request in flight) has finished.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit};
use tokio::time::Sleep;

use super::handlers::handle_any;
use super::limits::{HEADERS_MAX, HEAD_SIZE_MAX_BYTES};
use super::HttpApp;

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
    let connections_max = app.config().connections_max;
    crate::listener::serve_connections(
        listener,
        "HTTP API",
        connections_max,
        shutdown,
        |stream, permit, stop| serve_connection(stream, app.clone(), permit, stop),
    )
    .await
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
    let service_stop = stop.clone();
    let service = service_fn(move |request| {
        let app = service_app.clone();
        let stop = service_stop.clone();
        async move { Ok::<_, Infallible>(handle_any(&app, request, stop).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(app.config().header_read_timeout)
        .max_buf_size(HEAD_SIZE_MAX_BYTES)
        .max_headers(HEADERS_MAX)
        // Not `pipeline_flush`: with it hyper buffers a streaming body (an event stream) without
        // bound while the client does not read. Without it, hyper stops polling the body once
        // its write buffer is full, and the stream's bounded channel holds the rest.
        .keep_alive(true);
    let stream = WriteStallTimeout::new(stream, app.config().write_stall_timeout);
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

/// A stream whose writes fail with `TimedOut` once a write or flush has made no progress for
/// `timeout` (a client that stopped reading). Reads are untouched: hyper bounds those.
/// The timer exists only while a write is stalled.
#[derive(Debug)]
struct WriteStallTimeout {
    stream: TcpStream,
    timeout: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl WriteStallTimeout {
    fn new(stream: TcpStream, timeout: Duration) -> Self {
        WriteStallTimeout { stream, timeout, stalled: None }
    }

    /// Maps a pending write to `TimedOut` once it has been pending for `timeout`.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if poll.is_ready() {
            self.stalled = None;
            return poll;
        }
        let timeout = self.timeout;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        if stalled.as_mut().poll(cx).is_ready() {
            self.stalled = None;
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client did not read the response in time",
            )));
        }
        Poll::Pending
    }
}

impl AsyncRead for WriteStallTimeout {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteStallTimeout {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.check(cx, poll)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_flush(cx);
        self.check(cx, poll)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let poll = Pin::new(&mut self.stream).poll_shutdown(cx);
        self.check(cx, poll)
    }
}
