//! The network side every simulator shares: an accept loop that honours a cut link, and a
//! stream that closes when the link is cut.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{oneshot, watch};

/// Accepts connections on `listener` until `stop` fires (or its sender drops), handing each to
/// `on_connection` (with nodelay set: simulators answer small requests). While `link` is false
/// connections are accepted and closed at once: the listener stays bound, so the device comes
/// back on the same address when the link is restored.
pub async fn accept_while_linked(
    listener: TcpListener,
    link: watch::Receiver<bool>,
    mut stop: oneshot::Receiver<()>,
    what: &'static str,
    mut on_connection: impl FnMut(TcpStream),
) {
    loop {
        tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) if *link.borrow() => {
                    let _ = stream.set_nodelay(true);
                    on_connection(stream);
                }
                Ok(_) => {}
                Err(e) => tracing::debug!("{what} accept: {e}"),
            },
        }
    }
}

/// A connection's stream that reads as closed once the link is cut. The server's connection
/// task then ends and drops the socket, so the client sees the connection close even while it
/// is silent, as when the cable is pulled (for Modbus TCP servers: tokio-modbus owns those
/// tasks, so they cannot be aborted from outside).
pub(crate) struct LinkStream {
    stream: TcpStream,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cut: bool,
}

impl LinkStream {
    pub(crate) fn new(stream: TcpStream, mut link: watch::Receiver<bool>) -> LinkStream {
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
