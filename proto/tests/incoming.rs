//! The accept loop both servers use, on real loopback sockets. Time is paused (tokio's clock
//! jumps ahead whenever every task waits), so the handshake timeouts and back-offs are
//! measured on the virtual clock and nothing sleeps.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use cyclerd_proto::incoming::{
    Accept, BACKOFF_MAX, Connection, GREETING_BYTES, Incoming, Limits, incoming,
};
use futures::StreamExt as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

const HANDSHAKE: Duration = Duration::from_secs(2);

async fn serve(max_connections: usize) -> (Incoming<TcpStream>, std::net::SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = Limits {
        max_connections,
        handshake_timeout: HANDSHAKE,
    };
    (incoming(listener, limits), addr)
}

/// The next accepted connection; fails the test if none comes within a minute (virtual).
async fn next(incoming: &mut Incoming<TcpStream>) -> Connection<TcpStream> {
    let Ok(Some(Ok(connection))) =
        tokio::time::timeout(Duration::from_secs(60), incoming.next()).await
    else {
        panic!("no connection was accepted");
    };
    connection
}

/// Reads from a server-side connection until it fails or ends; returns how it ended and when.
fn read_until_closed(
    mut connection: Connection<TcpStream>,
) -> tokio::task::JoinHandle<(io::Result<usize>, Instant)> {
    tokio::spawn(async move {
        let mut buf = [0u8; 64];
        loop {
            match connection.read(&mut buf).await {
                Ok(0) => return (Ok(0), Instant::now()),
                Ok(_) => {}
                Err(e) => return (Err(e), Instant::now()),
            }
        }
    })
}

async fn greet(client: &mut TcpStream) {
    client.write_all(&[b'P'; GREETING_BYTES]).await.unwrap();
}

/// Waits until the server has closed `client` (end of stream or a reset).
async fn closed(client: &mut TcpStream) {
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(60), client.read(&mut buf))
        .await
        .expect("the server closes the connection");
    assert!(matches!(n, Ok(0) | Err(_)), "{n:?}");
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_nothing_is_closed_after_the_handshake_timeout() {
    let (mut incoming, addr) = serve(8).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let accepted = Instant::now();
    let reader = read_until_closed(next(&mut incoming).await);
    let (ended, at) = reader.await.unwrap();
    let e = ended.expect_err("the silent connection's read fails");
    assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
    assert!(
        at - accepted >= HANDSHAKE,
        "closed after {:?}",
        at - accepted
    );
    closed(&mut client).await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_sends_a_few_bytes_but_not_its_greeting_is_closed_too() {
    let (mut incoming, addr) = serve(8).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let reader = read_until_closed(next(&mut incoming).await);
    client.write_all(b"PRI").await.unwrap();
    let (ended, _) = reader.await.unwrap();
    assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::TimedOut);
    closed(&mut client).await;
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_greets_stays_open_long_after_the_handshake_timeout() {
    let (mut incoming, addr) = serve(8).await;
    let mut client = TcpStream::connect(addr).await.unwrap();
    let mut connection = next(&mut incoming).await;
    greet(&mut client).await;
    let mut buf = [0u8; GREETING_BYTES];
    connection.read_exact(&mut buf).await.unwrap();
    tokio::time::sleep(HANDSHAKE * 10).await;
    client.write_all(b"later").await.unwrap();
    let mut later = [0u8; 5];
    connection.read_exact(&mut later).await.unwrap();
    assert_eq!(&later, b"later");
    connection.write_all(b"answer").await.unwrap();
    client.read_exact(&mut [0u8; 6]).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_a_newcomer_closes_the_oldest_silent_connection_and_not_one_that_greeted() {
    let (mut incoming, addr) = serve(2).await;
    let mut silent = TcpStream::connect(addr).await.unwrap();
    let silent_reader = read_until_closed(next(&mut incoming).await);
    let mut greeted = TcpStream::connect(addr).await.unwrap();
    let mut greeted_connection = next(&mut incoming).await;
    greet(&mut greeted).await;
    greeted_connection
        .read_exact(&mut [0u8; GREETING_BYTES])
        .await
        .unwrap();

    let started = Instant::now();
    let _newcomer = TcpStream::connect(addr).await.unwrap();
    let _newcomer_connection = next(&mut incoming).await;
    assert!(
        started.elapsed() < HANDSHAKE,
        "the newcomer did not wait for the silent one's timeout"
    );
    let (ended, _) = silent_reader.await.unwrap();
    assert_eq!(ended.unwrap_err().kind(), io::ErrorKind::TimedOut);
    closed(&mut silent).await;

    greeted.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    greeted_connection.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
}

#[tokio::test(start_paused = true)]
async fn at_the_cap_with_every_connection_greeted_a_newcomer_waits_until_one_closes() {
    let (mut incoming, addr) = serve(1).await;
    let mut first = TcpStream::connect(addr).await.unwrap();
    let mut first_connection = next(&mut incoming).await;
    greet(&mut first).await;
    first_connection
        .read_exact(&mut [0u8; GREETING_BYTES])
        .await
        .unwrap();

    let _second = TcpStream::connect(addr).await.unwrap();
    assert!(
        tokio::time::timeout(HANDSHAKE * 5, incoming.next())
            .await
            .is_err(),
        "no second connection is yielded while the first is open"
    );
    drop(first_connection);
    let _second_connection = next(&mut incoming).await;
}

/// A real listener that fails with "too many open files" while `failures` is above zero, and
/// counts its attempts.
struct Exhausted {
    listener: TcpListener,
    failures: Arc<AtomicUsize>,
    attempts: Arc<AtomicUsize>,
}

impl Accept for Exhausted {
    type Io = TcpStream;
    async fn accept(&mut self) -> io::Result<TcpStream> {
        // A loop that spins would never let the paused clock move: fail instead of hanging.
        let attempt = self.attempts.fetch_add(1, Ordering::SeqCst);
        assert!(attempt < 1000, "the accept loop spins on errors");
        if self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(io::Error::other("Too many open files (os error 24)"));
        }
        Ok(self.listener.accept().await?.0)
    }
}

#[tokio::test(start_paused = true)]
async fn accept_errors_back_off_instead_of_spinning_and_accepting_resumes_when_they_stop() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failures = Arc::new(AtomicUsize::new(usize::MAX));
    let attempts = Arc::new(AtomicUsize::new(0));
    let mut incoming = incoming(
        Exhausted {
            listener,
            failures: failures.clone(),
            attempts: attempts.clone(),
        },
        Limits::default(),
    );
    let _client = TcpStream::connect(addr).await.unwrap();

    let window = Duration::from_secs(10);
    assert!(
        tokio::time::timeout(window, incoming.next()).await.is_err(),
        "nothing is accepted while accepting fails"
    );
    // 50 ms doubling to 1 s: 5 attempts in the first 1.55 s, then one a second.
    let tried = attempts.load(Ordering::SeqCst);
    assert!(
        (10..=20).contains(&tried),
        "{tried} attempts in {window:?}: the loop must retry, but not spin"
    );

    failures.store(0, Ordering::SeqCst);
    let recovered = Instant::now();
    let Ok(Some(Ok(_connection))) = tokio::time::timeout(window, incoming.next()).await else {
        panic!("the waiting client is accepted once accepting works again");
    };
    assert!(
        recovered.elapsed() <= BACKOFF_MAX,
        "{:?}",
        recovered.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_peer_address_reaches_the_server_as_with_tonics_own_listener() {
    use tonic::transport::server::Connected as _;
    let (mut incoming, addr) = serve(8).await;
    let client = TcpStream::connect(addr).await.unwrap();
    let connection = next(&mut incoming).await;
    assert_eq!(
        connection.connect_info().remote_addr(),
        Some(client.local_addr().unwrap())
    );
}

#[cfg(unix)]
#[test]
fn the_soft_open_file_limit_is_raised_to_the_hard_limit() {
    // SAFETY: getrlimit and setrlimit only read and write the struct passed to them.
    let hard = unsafe {
        let mut limit: libc::rlimit = std::mem::zeroed();
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        // Lowered first, so that raising it is seen (this test binary's other tests need few).
        let mut lowered = limit;
        lowered.rlim_cur = limit.rlim_max.min(256);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lowered), 0);
        limit.rlim_max
    };
    let soft = cyclerd_proto::incoming::raise_open_file_limit().expect("a limit on unix");
    if cfg!(target_os = "macos") {
        assert!(soft >= 256, "{soft}");
    } else {
        #[allow(clippy::unnecessary_cast)] // rlim_t is u64 on Linux, not everywhere
        let hard = hard as u64;
        assert_eq!(soft, hard);
    }
}

#[test]
fn the_connection_cap_leaves_half_the_open_file_limit_for_everything_else() {
    use cyclerd_proto::incoming::max_connections_within;
    assert_eq!(max_connections_within(512, Some(65536)), 512);
    assert_eq!(max_connections_within(512, Some(1024)), 512);
    assert_eq!(max_connections_within(512, Some(256)), 128);
    assert_eq!(max_connections_within(512, None), 512);
    assert_eq!(max_connections_within(0, Some(1024)), 1);
}
