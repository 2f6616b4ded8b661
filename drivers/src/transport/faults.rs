//! The reply faults a simulator's handle injects, kept in the simulated device's state: a delay
//! before every reply, and a number of next requests to refuse, with the refusal in the
//! family's terms (an exception code, a refusal reason; `()` where a refusal is all there is).
//! The link a handle cuts is [`super::network::Link`].

use std::time::Duration;

/// A simulator's reply faults; none at first.
pub(crate) struct Faults<R = ()> {
    /// Wall time every reply waits before it goes out.
    reply_delay: Duration,
    /// How many of the next requests are refused...
    failing: u32,
    /// ...and with what.
    fail_with: R,
}

impl<R: Clone> Faults<R> {
    /// No faults; requests the handle asks to refuse get `fail_with` until it says otherwise.
    pub(crate) fn new(fail_with: R) -> Self {
        Faults {
            reply_delay: Duration::ZERO,
            failing: 0,
            fail_with,
        }
    }

    /// The delay every reply waits (zero for none).
    pub(crate) fn reply_delay(&self) -> Duration {
        self.reply_delay
    }

    /// Delays every reply by `delay` (zero for none).
    pub(crate) fn set_reply_delay(&mut self, delay: Duration) {
        self.reply_delay = delay;
    }

    /// Refuses the next `n` requests with `refusal`.
    pub(crate) fn fail_next(&mut self, n: u32, refusal: R) {
        self.failing = n;
        self.fail_with = refusal;
    }

    /// The refusal for the request at hand, when it is one of those to refuse (it is counted).
    pub(crate) fn refusal(&mut self) -> Option<R> {
        if self.failing == 0 {
            return None;
        }
        self.failing -= 1;
        Some(self.fail_with.clone())
    }
}

impl Faults {
    /// No faults.
    pub(crate) fn none() -> Self {
        Faults::new(())
    }

    /// Whether the request at hand is to be refused (it is counted).
    pub(crate) fn failing(&mut self) -> bool {
        self.refusal().is_some()
    }
}
