//! Accepting TCP connections for a gRPC server so that a crowd of peers cannot take it down:
//! the daemon's control port and the hub both serve on [`incoming`] instead of tonic's
//! `TcpIncoming`.
//!
//! - An accept error (out of descriptors, `EMFILE`/`ENFILE`, out of buffers or memory) is
//!   logged once per burst and retried after a back-off ([`BACKOFF_FIRST`] doubling up to
//!   [`BACKOFF_MAX`]) instead of at once, which spun a core; the stream never ends on one.
//! - A connection that has not sent its first [`GREETING_BYTES`] bytes within
//!   [`Limits::handshake_timeout`] is closed: an HTTP/2 client sends its 24-byte preface at
//!   once, a TLS client its ClientHello.
//! - At most [`Limits::max_connections`] connections are open at once. At the cap, the oldest
//!   connection still in its handshake is closed to make room (an idle crowd pushes itself out,
//!   while clients that spoke keep their place); when every open connection has spoken, the
//!   newcomer waits for one to close and the kernel's listen backlog holds those behind it.
//!
//! Peers that stop answering after the handshake are the server's HTTP/2 keepalive's to drop
//! ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`]).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;
use futures::{Stream, StreamExt as _};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Sleep;

/// Connections open at once by default: far more than a lab's clients need, and half the 1024
/// descriptors a process gets where nothing raised the limit, so the rest stay for databases,
/// device links and the hub's own streams.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// How long a new connection may take to send its first bytes by default.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first wait after an accept error.
pub const BACKOFF_FIRST: Duration = Duration::from_millis(50);
/// The longest wait between attempts while accepting keeps failing.
pub const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Bytes after which a connection has spoken: the HTTP/2 client preface is 24 bytes, and a TLS
/// ClientHello is longer, so a peer dribbling single bytes cannot keep its place.
pub const GREETING_BYTES: usize = 24;
/// How often the servers ping an HTTP/2 connection that is quiet.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is dropped.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// How many connections, and how long a silent one, a server tolerates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections open at once (at least 1).
    pub max_connections: usize,
    /// How long a new connection may stay silent before it is closed.
    pub handshake_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }
}

/// What [`incoming`] accepts from: a [`TcpListener`], or a stand-in in tests.
pub trait Accept: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

impl Accept for TcpListener {
    type Io = TcpStream;
    async fn accept(&mut self) -> io::Result<TcpStream> {
        let (stream, _) = TcpListener::accept(self).await?;
        // gRPC messages are small and latency matters more than packet count.
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }
}

/// The connections a server accepts, for tonic's `serve_with_incoming_shutdown`. Never ends
/// and never yields an error (the error type is [`Infallible`]).
pub struct Incoming<Io> {
    inner: Pin<Box<dyn Stream<Item = Result<Connection<Io>, Infallible>> + Send>>,
}

impl<Io> Stream for Incoming<Io> {
    type Item = Result<Connection<Io>, Infallible>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// Accepts connections from `listener` within `limits` (see the module's documentation).
pub fn incoming<L: Accept>(listener: L, limits: Limits) -> Incoming<L::Io> {
    let max = limits.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let acceptor = Acceptor {
        listener,
        limits,
        slots: Arc::new(Semaphore::new(max)),
        greeting: VecDeque::new(),
        max,
    };
    let stream = futures::stream::unfold(acceptor, |mut acceptor| async move {
        let connection = acceptor.next().await;
        Some((Ok(connection), acceptor))
    });
    Incoming {
        inner: stream.boxed(),
    }
}

/// The accept loop's state.
struct Acceptor<L> {
    listener: L,
    limits: Limits,
    /// One permit per open connection.
    slots: Arc<Semaphore>,
    /// Connections accepted that may still be in their handshake, oldest first.
    greeting: VecDeque<Arc<Greeting>>,
    max: usize,
}

impl<L: Accept> Acceptor<L> {
    async fn next(&mut self) -> Connection<L::Io> {
        let mut failures = 0u64;
        let mut backoff = BACKOFF_FIRST;
        loop {
            match self.listener.accept().await {
                Ok(io) => {
                    if failures > 0 {
                        tracing::info!(failures, "accepting connections again");
                    }
                    let slot = self.slot().await;
                    let greeting = Arc::new(Greeting::default());
                    self.remember(greeting.clone());
                    return Connection::new(io, slot, greeting, self.limits.handshake_timeout);
                }
                // One peer gave up before it was accepted: nothing wrong with the listener.
                Err(e) if per_connection(&e) => {
                    tracing::debug!(error = %e, "a connection ended before it was accepted");
                }
                Err(e) => {
                    if failures == 0 {
                        tracing::warn!(
                            error = %e,
                            "cannot accept connections (out of file descriptors or memory?); \
                             retrying with a back-off up to {BACKOFF_MAX:?}"
                        );
                    }
                    failures += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// A place for a connection just accepted. At the cap, the oldest connection still silent
    /// is closed to make room (its place comes back when the server drops it); when none is,
    /// this waits for one to close, and the listen backlog holds the connections behind.
    async fn slot(&mut self) -> OwnedSemaphorePermit {
        if let Ok(slot) = self.slots.clone().try_acquire_owned() {
            return slot;
        }
        if let Some(oldest) = self.oldest_greeting() {
            oldest.evict();
        }
        self.slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed")
    }

    /// The oldest connection still in its handshake, forgetting those done or gone.
    fn oldest_greeting(&mut self) -> Option<Arc<Greeting>> {
        while let Some(g) = self.greeting.pop_front() {
            if g.pending() {
                return Some(g);
            }
        }
        None
    }

    fn remember(&mut self, greeting: Arc<Greeting>) {
        // Connections that spoke or closed are skipped lazily; sweep now and then so the queue
        // stays near the number of connections open.
        if self.greeting.len() >= 2 * self.max {
            self.greeting.retain(|g| g.pending());
        }
        self.greeting.push_back(greeting);
    }
}

/// Errors about one connection, not about the listener: retried at once.
fn per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
    )
}

/// A connection's handshake, shared by the connection and the accept loop.
#[derive(Default)]
struct Greeting {
    /// The connection sent its greeting, or was dropped.
    done: AtomicBool,
    /// The accept loop wants its slot: the next read fails.
    evicted: AtomicBool,
    /// The connection's reader, woken on eviction.
    reader: AtomicWaker,
}

impl Greeting {
    fn pending(&self) -> bool {
        !self.done.load(Ordering::Acquire)
    }

    fn evict(&self) {
        self.evicted.store(true, Ordering::Release);
        self.reader.wake();
    }
}

/// A connection in its handshake: until when it may stay silent, and what it sent so far.
struct Handshake {
    greeting: Arc<Greeting>,
    deadline: Pin<Box<Sleep>>,
    timeout: Duration,
    received: usize,
}

/// An accepted connection: the stream, its place among those open at once (given back when it
/// is dropped), and until it has spoken, its handshake deadline.
pub struct Connection<Io> {
    io: Io,
    handshake: Option<Handshake>,
    _slot: OwnedSemaphorePermit,
}

impl<Io> Connection<Io> {
    fn new(io: Io, slot: OwnedSemaphorePermit, greeting: Arc<Greeting>, timeout: Duration) -> Self {
        Connection {
            io,
            handshake: Some(Handshake {
                greeting,
                deadline: Box::pin(tokio::time::sleep(timeout)),
                timeout,
                received: 0,
            }),
            _slot: slot,
        }
    }

    /// The accepted stream.
    pub fn get_ref(&self) -> &Io {
        &self.io
    }
}

impl<Io> Drop for Connection<Io> {
    fn drop(&mut self) {
        if let Some(h) = &self.handshake {
            h.greeting.done.store(true, Ordering::Release);
        }
    }
}

impl<Io: AsyncRead + Unpin> AsyncRead for Connection<Io> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let Some(h) = &mut this.handshake else {
            return Pin::new(&mut this.io).poll_read(cx, buf);
        };
        // Registered before the flag is read, so an eviction in between still wakes us.
        h.greeting.reader.register(cx.waker());
        if h.greeting.evicted.load(Ordering::Acquire) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "closed while silent: the server is at its connection limit",
            )));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                h.received += n;
                // End of stream (n == 0) ends the handshake too: the server closes it.
                if n == 0 || h.received >= GREETING_BYTES {
                    h.greeting.done.store(true, Ordering::Release);
                    this.handshake = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match h.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("sent no greeting within {:?}", h.timeout),
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<Io: AsyncWrite + Unpin> AsyncWrite for Connection<Io> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// The peer's address for `Request::remote_addr`, as tonic's own listener gives it.
impl<Io: tonic::transport::server::Connected> tonic::transport::server::Connected
    for Connection<Io>
{
    type ConnectInfo = Io::ConnectInfo;
    fn connect_info(&self) -> Self::ConnectInfo {
        self.io.connect_info()
    }
}

/// Raises this process's soft limit on open files to its hard limit (as Go's runtime does), so
/// that the systemd units' `LimitNOFILE` or a shell's `ulimit -Hn` is what counts. Returns the
/// soft limit in force afterwards; `None` where there is no such limit (Windows) or it cannot
/// be read.
pub fn raise_open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        unix::raise_open_file_limit()
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// A connection cap that leaves room under an open-file limit of `soft`: the smaller of
/// `wanted` and half the limit (the rest is for the process's files, device links, clients).
pub fn max_connections_within(wanted: usize, soft: Option<u64>) -> usize {
    let half = soft.map_or(usize::MAX, |s| usize::try_from(s / 2).unwrap_or(usize::MAX));
    wanted.min(half).max(1)
}

#[cfg(unix)]
mod unix {
    pub(super) fn raise_open_file_limit() -> Option<u64> {
        // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
        unsafe {
            let mut limit: libc::rlimit = std::mem::zeroed();
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
                return None;
            }
            if limit.rlim_cur < limit.rlim_max {
                let mut raised = limit;
                raised.rlim_cur = limit.rlim_max;
                // macOS refuses more than OPEN_MAX although its hard limit says "unlimited".
                #[cfg(target_os = "macos")]
                if raised.rlim_cur > 10240 {
                    raised.rlim_cur = 10240.max(limit.rlim_cur);
                }
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    limit = raised;
                }
            }
            #[allow(clippy::useless_conversion)] // rlim_t is u64 on most targets, not all
            Some(u64::try_from(limit.rlim_cur).unwrap_or(u64::MAX))
        }
    }
}
