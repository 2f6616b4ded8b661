//! The network side every simulator shares: the link a handle cuts, an accept loop that honours
//! it, a Modbus TCP server that does too, and a stream that closes when the link is cut. And
//! the one thing every network client shares: [`connect`], bounded by its timeout.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};
use tokio_modbus::server::Service;
use tokio_modbus::server::tcp::{Server, accept_tcp_connection};

use crate::DriverError;

/// Connects to a device at `addr`, giving up after `timeout`. Nodelay is set when it can be:
/// requests are small and each waits for its reply, so coalescing them only adds latency.
pub(crate) async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, DriverError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| DriverError::Timeout {
            during: "connecting",
            timeout_ms: timeout.as_millis() as u64,
        })?
        .map_err(|source| DriverError::Connect { addr, source })?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// A simulated device's cable, switched by its handle's `cut_link` / `restore_link` and
/// watched by its connections (or by a serial line's relay). Clones are the same cable; when
/// the last one drops, watchers see the link cut (the device is gone).
#[derive(Clone)]
pub(crate) struct Link(Arc<watch::Sender<bool>>);

impl Link {
    /// A plugged-in cable.
    pub(crate) fn up() -> Link {
        Link(Arc::new(watch::channel(true).0))
    }

    /// Pulls the cable.
    pub(crate) fn cut(&self) {
        self.0.send_replace(false);
    }

    /// Plugs it back in.
    pub(crate) fn restore(&self) {
        self.0.send_replace(true);
    }

    /// Whether the cable is plugged in now.
    pub(crate) fn is_up(&self) -> bool {
        *self.0.borrow()
    }

    /// Watches the cable: true while it is plugged in.
    pub(crate) fn watch(&self) -> watch::Receiver<bool> {
        self.0.subscribe()
    }
}

/// Runs `f` unless `link` is cut (or its sender drops) first: `None` then. A connection ends
/// this way when its link is cut, closing the socket.
pub(crate) async fn unless_cut<T>(
    link: &mut watch::Receiver<bool>,
    f: impl Future<Output = T>,
) -> Option<T> {
    tokio::select! {
        r = f => Some(r),
        _ = link.wait_for(|up| !up) => None,
    }
}

/// Reads into `buf` (cleared first) through the next `end`, or `max` bytes when no `end` comes
/// first (the caller tells by the last byte); false when the stream ended or failed, or `link`
/// was cut first, which ends the connection.
pub(crate) async fn read_until_unless_cut(
    rd: &mut (impl AsyncBufRead + Unpin),
    end: u8,
    max: usize,
    buf: &mut Vec<u8>,
    link: &mut watch::Receiver<bool>,
) -> bool {
    buf.clear();
    let mut limited = rd.take(max as u64);
    matches!(unless_cut(link, limited.read_until(end, buf)).await, Some(Ok(n)) if n > 0)
}

/// Waits out an injected reply `delay` (none when zero); false when `link` was cut meanwhile,
/// and the reply is lost with it.
pub(crate) async fn delay_unless_cut(delay: Duration, link: &mut watch::Receiver<bool>) -> bool {
    delay.is_zero() || unless_cut(link, tokio::time::sleep(delay)).await.is_some()
}

/// Accepts connections on `listener` until `stop` fires (or its sender drops), handing each to
/// `on_connection` with its own watch of `link` (with nodelay set: simulators answer small
/// requests). While `link` is cut connections are accepted and closed at once: the listener
/// stays bound, so the device comes back on the same address when the link is restored.
pub async fn accept_while_linked(
    listener: TcpListener,
    link: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<()>,
    what: &'static str,
    mut on_connection: impl FnMut(TcpStream, watch::Receiver<bool>),
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if *link.borrow() => {
                    let _ = stream.set_nodelay(true);
                    on_connection(stream, link.clone());
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("{what} accept: {e}"),
            },
        }
    }
}

/// Serves Modbus TCP on `listener`, a clone of `service` per connection, until `stop` fires
/// (or its sender drops); returns the address it serves on. The listener stays bound through
/// a cut of `link`, so the device comes back on the same address; while cut, connections are
/// accepted and closed at once, and a cut closes open ones (see [`LinkStream`]). Must be
/// called inside a tokio runtime.
pub(crate) fn spawn_modbus_while_linked<S>(
    listener: TcpListener,
    service: S,
    link: watch::Receiver<bool>,
    stop: oneshot::Receiver<()>,
    what: &'static str,
) -> io::Result<SocketAddr>
where
    S: Service<Request = tokio_modbus::Request<'static>> + Clone + Send + Sync + 'static,
{
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let server = Server::new(listener);
        let new_service = move |_addr: SocketAddr| Ok(Some(service.clone()));
        let on_connected = move |stream: TcpStream, socket_addr| {
            let new_service = new_service.clone();
            let link = link.clone();
            async move {
                if !*link.borrow() {
                    // Dropping the stream closes it.
                    return Ok(None);
                }
                Ok(accept_tcp_connection(stream, socket_addr, new_service)?
                    .map(|(service, stream)| (service, LinkStream::new(stream, link))))
            }
        };
        let stop = async move {
            let _ = stop.await;
        };
        if let Err(e) = server
            .serve_until(
                &on_connected,
                move |e| tracing::debug!("{what} connection: {e}"),
                stop,
            )
            .await
        {
            tracing::warn!("{what} on {addr} stopped: {e}");
        }
    });
    Ok(addr)
}

/// A connection's stream that reads as closed once the link is cut. The server's connection
/// task then ends and drops the socket, so the client sees the connection close even while it
/// is silent, as when the cable is pulled (for Modbus TCP servers: tokio-modbus owns those
/// tasks, so they cannot be aborted from outside).
struct LinkStream {
    stream: TcpStream,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cut: bool,
}

impl LinkStream {
    fn new(stream: TcpStream, mut link: watch::Receiver<bool>) -> LinkStream {
        LinkStream {
            stream,
            // A dropped sender (the handle is gone) counts as a cut too.
            cut: Box::pin(async move {
                let _ = link.wait_for(|up| !up).await;
            }),
            is_cut: false,
        }
    }

    /// Whether the link has been cut; registers the task for the wake-up when it is not yet.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> bool {
        // The future is not polled again once it has completed.
        if !self.is_cut && self.cut.as_mut().poll(cx).is_ready() {
            self.is_cut = true;
        }
        self.is_cut
    }
}

impl AsyncRead for LinkStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.poll_cut(cx) {
            // End of stream, with nothing read.
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for LinkStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.poll_cut(cx) {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}
