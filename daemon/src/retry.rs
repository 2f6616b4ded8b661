//! Waiting for a device that does not answer: retries 1 s apart, doubling to 10 s, until it
//! answers or the daemon stops, while whoever depends on it is told why and its requests are
//! refused. Knows nothing of channels or chambers: they implement [`Waiting`].
//!
//! A lost link and a device that answers garbage are waited for ([`waits`]): both may be a
//! device still booting or a cable that picks up noise. A device that clearly is not what the
//! configuration says, or an entry missing a key, still stops the daemon at start.

use cyclerd_drivers::DriverError;
use std::future::{Future, poll_fn};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::watch;

/// Wall time before the first retry; doubled after each failure up to [`RETRY_MAX`].
pub const RETRY_MIN: Duration = Duration::from_secs(1);
/// A device that stays down is still asked this often, so it is found soon after it boots.
pub const RETRY_MAX: Duration = Duration::from_secs(10);

/// Whoever depends on a device that does not answer yet.
pub trait Waiting {
    /// Shows the device as not answering, because of `why`.
    fn offline(&mut self, why: &str);
    /// Shows the device as answering.
    fn online(&mut self);
    /// Refuses every request waiting, naming `why`; ready when the requests' senders are gone
    /// (the daemon is ending).
    fn refuse(&mut self, cx: &mut Context<'_>, why: &str) -> Poll<()>;
}

/// Whether a device that failed the daemon's first attempt with `error` is waited for: its link
/// is lost, or it answered something that makes no sense (garbage on the line, a reply of the
/// wrong shape). An identity mismatch, a missing key or a refusal of the configured setup is
/// a mistake in the configuration that waiting would hide.
pub fn waits(error: &DriverError) -> bool {
    error.is_link_lost() || matches!(error, DriverError::BadReply { .. })
}

/// Says that the device named by `what` did not answer the daemon's first attempt (`first`),
/// in the log and to `waiting`, before [`wait_for`] runs in the background: the status is
/// right as soon as the daemon has started.
pub fn begin(what: &str, first: &DriverError, waiting: &mut impl Waiting) {
    let why = why(what, first);
    tracing::error!("{why}; waiting for it");
    waiting.offline(&why);
}

fn why(what: &str, error: &DriverError) -> String {
    if error.is_link_lost() {
        format!("{what} does not answer: {error} (retrying)")
    } else {
        // It answered, but not as the configuration says (e.g. a cycler still booting lists
        // fewer channels): worth retrying too, but said as it is.
        format!("{what} answers, but: {error} (retrying)")
    }
}

/// Retries `connect` until it succeeds (`Some`) or the daemon stops (`None`). Meanwhile
/// `waiting` shows why the device (named by `what`) does not answer and its requests are
/// refused with that reason; `first` is the error [`begin`] reported.
pub async fn wait_for<T, F, Fut>(
    what: &str,
    first: DriverError,
    mut connect: F,
    waiting: &mut impl Waiting,
    stop: &mut watch::Receiver<bool>,
) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DriverError>>,
{
    let mut why = why(what, &first);
    let mut delay = RETRY_MIN;
    loop {
        serve_while(tokio::time::sleep(delay), &why, waiting, stop).await?;
        delay = (delay * 2).min(RETRY_MAX);
        match serve_while(connect(), &why, waiting, stop).await? {
            // The daemon may have begun to stop while the device answered: no runner then.
            Ok(_) if *stop.borrow() => return None,
            Ok(connected) => {
                tracing::info!("{what} answers now");
                waiting.online();
                return Some(connected);
            }
            Err(e) => {
                let now = self::why(what, &e);
                if now != why {
                    if e.is_link_lost() {
                        tracing::debug!("{now}");
                    } else {
                        tracing::error!("{now}");
                    }
                    waiting.offline(&now);
                    why = now;
                }
            }
        }
    }
}

/// Runs `work` to its end while refusing requests with `why`; `None` when the daemon stops
/// first.
async fn serve_while<W: Future>(
    work: W,
    why: &str,
    waiting: &mut impl Waiting,
    stop: &mut watch::Receiver<bool>,
) -> Option<W::Output> {
    if *stop.borrow() {
        return None;
    }
    tokio::select! {
        biased;
        _ = stop.changed() => None,
        () = poll_fn(|cx| waiting.refuse(cx, why)) => None,
        done = work => Some(done),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use tokio::time::Instant;

    /// Records what a waiting channel was told.
    #[derive(Default)]
    struct Told(Vec<String>);

    impl Waiting for Told {
        fn offline(&mut self, why: &str) {
            self.0.push(why.into());
        }
        fn online(&mut self) {
            self.0.push("online".into());
        }
        fn refuse(&mut self, _: &mut Context<'_>, _: &str) -> Poll<()> {
            Poll::Pending
        }
    }

    fn refused() -> DriverError {
        DriverError::Link {
            during: "connecting",
            message: "refused".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_back_off_from_one_second_to_ten_and_the_answer_ends_the_wait() {
        let began = Instant::now();
        let attempts = RefCell::new(Vec::new());
        let connect = || {
            attempts.borrow_mut().push(began.elapsed().as_secs());
            let n = attempts.borrow().len();
            async move {
                match n {
                    3 => Err(DriverError::Identity("lists 2 channels".into())),
                    7 => Ok(n),
                    _ => Err(refused()),
                }
            }
        };
        let mut told = Told::default();
        let (_stop_tx, mut stop) = watch::channel(false);
        let answered = wait_for("device \"psb1\"", refused(), connect, &mut told, &mut stop).await;
        assert_eq!(answered, Some(7));
        assert_eq!(*attempts.borrow(), [1, 3, 7, 15, 25, 35, 45]);
        assert_eq!(
            told.0,
            [
                "device \"psb1\" answers, but: the device is not what the configuration says: \
                 lists 2 channels (retrying)",
                "device \"psb1\" does not answer: link to the device failed while connecting: \
                 refused (retrying)",
                "online",
            ]
        );
    }

    #[test]
    fn a_device_answering_garbage_is_waited_for_but_one_that_is_not_the_configured_one_is_not() {
        let garbage = DriverError::BadReply {
            during: "clearing the error queue",
            message: "\"#~*\" is not an error-queue entry".into(),
        };
        assert!(waits(&refused()) && waits(&garbage));
        assert!(!waits(&DriverError::Identity("lists 2 channels".into())));
        assert!(!waits(&DriverError::Unsupported("a dialect".into())));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_daemon_ends_the_wait_without_a_device() {
        let (stop_tx, mut stop) = watch::channel(false);
        let connect = || async {
            let _ = stop_tx.send(true);
            Err::<(), _>(refused())
        };
        let mut told = Told::default();
        let answered = wait_for("device \"psb1\"", refused(), connect, &mut told, &mut stop).await;
        assert_eq!(answered, None);
        assert!(!told.0.contains(&"online".to_string()));
    }
}
