//! The network side every simulator shares: an accept loop that honours a cut link.

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
