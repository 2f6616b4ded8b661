//! What the four chamber simulators (Espec, Weiss, Watlow, Binder) share behind their wire
//! protocols: a [`SimCore`] in each family's controller state (the air moved to the clock, the
//! alarm raised from outside, refused requests), and a [`ChamberSim`] in each family's handle
//! (the getters and fault switches over that state, and the link). How a family reports the
//! alarm, refuses a request and runs its modes stays in its own `sim`.

use super::thermal::{Air, ThermalModel, ThermalParams};
use crate::Clock;
use crate::transport::faults::Faults;
use crate::transport::lock;
use crate::transport::network::Link;
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// The part of a simulated controller's state that every chamber family has.
pub(crate) struct SimCore<R> {
    /// Where the air's time comes from.
    clock: Clock,
    /// Set point, regulation and the air.
    pub(crate) model: ThermalModel,
    /// The alarm raised through the handle, in the words given; each family puts it on the
    /// wire its own way (a code, a status bit, a state, a word).
    alarm: Option<String>,
    /// Requests refused, and with what refusal in the family's terms.
    faults: Faults<R>,
}

impl<R: Clone> SimCore<R> {
    /// A chamber moving `air` as `thermal` says, off, at clock time now; refused requests get
    /// `fail_with` until the handle says otherwise.
    pub(crate) fn new(thermal: ThermalParams, air: Air, clock: Clock, fail_with: R) -> Self {
        SimCore {
            model: ThermalModel::new(thermal, air, clock.now()),
            clock,
            alarm: None,
            faults: Faults::new(fail_with),
        }
    }

    /// Moves the air on to the clock's time now.
    pub(crate) fn advance(&mut self) {
        self.model.advance(self.clock.now());
    }

    /// The alarm raised now, if any.
    pub(crate) fn alarm(&self) -> Option<&str> {
        self.alarm.as_deref()
    }

    /// Raises an alarm with `alarm`'s words, or clears it with `None`.
    pub(crate) fn set_alarm(&mut self, alarm: Option<&str>) {
        self.alarm = alarm.map(str::to_string);
    }

    /// The refusal for the request at hand, when it is one of those the handle asked to refuse.
    pub(crate) fn refusal(&mut self) -> Option<R> {
        self.faults.refusal()
    }
}

/// A family's controller state, with its [`SimCore`] inside.
pub(crate) trait ChamberState: Send + 'static {
    /// How the family refuses a request: its refusal reason, code or exception.
    type Refusal: Clone;

    /// The core inside.
    fn core(&mut self) -> &mut SimCore<Self::Refusal>;
}

/// What every chamber simulator's handle holds and does; dropping it stops the server.
pub(crate) struct ChamberSim<C> {
    /// The controller behind every connection.
    state: Arc<Mutex<C>>,
    /// The network link, or the serial line's cable.
    link: Link,
    /// Dropped with the handle, which stops the server.
    _stop: oneshot::Sender<()>,
}

impl<C: ChamberState> ChamberSim<C> {
    pub(crate) fn new(state: Arc<Mutex<C>>, link: Link, stop: oneshot::Sender<()>) -> Self {
        ChamberSim {
            state,
            link,
            _stop: stop,
        }
    }

    /// The controller, for what only its family knows.
    pub(crate) fn lock(&self) -> MutexGuard<'_, C> {
        lock(&self.state)
    }

    /// The air temperature now, degC.
    pub(crate) fn temperature_c(&self) -> f64 {
        let mut c = self.lock();
        let core = c.core();
        core.advance();
        core.model.temperature_c()
    }

    /// The set point in force, degC.
    pub(crate) fn set_point_c(&self) -> f64 {
        self.lock().core().model.set_point_c()
    }

    /// Whether the model regulates to the set point.
    pub(crate) fn running(&self) -> bool {
        self.lock().core().model.running()
    }

    /// The chamber's air, to put simulated cells in it.
    pub(crate) fn air(&self) -> Air {
        self.lock().core().model.air().clone()
    }

    /// Pulls the cable; the chamber keeps regulating.
    pub(crate) fn cut_link(&self) {
        self.link.cut();
    }

    /// Plugs the cable back in.
    pub(crate) fn restore_link(&self) {
        self.link.restore();
    }

    /// Raises an alarm with `alarm`'s words, or clears it with `None`.
    pub(crate) fn set_alarm(&self, alarm: Option<&str>) {
        self.lock().core().set_alarm(alarm);
    }

    /// Makes the air run away at `c_per_min` (see [`ThermalModel::set_runaway`]), from the
    /// clock's time now, or behave again with `None`.
    pub(crate) fn set_runaway(&self, c_per_min: Option<f64>) {
        let mut c = self.lock();
        let core = c.core();
        core.advance();
        core.model.set_runaway(c_per_min);
    }

    /// Refuses the next `n` requests with `refusal`.
    pub(crate) fn fail_next(&self, n: u32, refusal: C::Refusal) {
        self.lock().core().faults.fail_next(n, refusal);
    }
}

/// The getters and fault switches every chamber simulator's handle has, in its `impl`,
/// delegated to its `sim: ChamberSim<_>` field; `$refusal` is what its `fail_next` refuses
/// with. What a family says differently (`running`, `set_alarm`, where it serves) it writes
/// itself.
macro_rules! chamber_handle_methods {
    ($refusal:ty) => {
        /// The air temperature now, degC.
        pub fn temperature_c(&self) -> f64 {
            self.sim.temperature_c()
        }

        /// The set point in force, degC.
        pub fn set_point_c(&self) -> f64 {
            self.sim.set_point_c()
        }

        /// The chamber's air, to put simulated cells in it.
        pub fn air(&self) -> $crate::chamber::thermal::Air {
            self.sim.air()
        }

        /// Pulls the cable (the module's faults say what that does on each port). The chamber
        /// keeps regulating as it was.
        pub fn cut_link(&self) {
            self.sim.cut_link();
        }

        /// Plugs the cable back in, on the same address or port.
        pub fn restore_link(&self) {
            self.sim.restore_link();
        }

        /// Makes the air run away at `c_per_min` whatever the controller does (a stuck heater
        /// when positive, a stuck cooler when negative), or behave again with `None`.
        pub fn set_runaway(&self, c_per_min: Option<f64>) {
            self.sim.set_runaway(c_per_min);
        }

        /// Refuses the next `n` requests, whatever they are, with `refusal`.
        pub fn fail_next(&self, n: u32, refusal: $refusal) {
            self.sim.fail_next(n, refusal);
        }
    };
}

pub(crate) use chamber_handle_methods;
