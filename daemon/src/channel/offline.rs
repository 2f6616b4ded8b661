//! Channels of a device that does not answer when the daemon starts: a cycler still booting
//! after a power cut, a cable out, a serial adapter not yet enumerated. The daemon starts
//! anyway; the device's channels show `offline` with the reason and refuse tests naming it
//! while [`crate::retry`] asks the device again. Once it answers, its runner starts as if it had
//! been there from the start (an interrupted test is resumed then, by the usual rules; a
//! stepped one waiting may be stopped meanwhile).

use super::journal::TestJournal;
use super::{ChannelCmd, ChannelStart, Ending, StartError};
use crate::outbox::Checkpoint;
use crate::retry::Waiting;
use std::task::{Context, Poll};

/// The channels of a device that does not answer.
pub struct Channels<'a> {
    pub starts: Vec<&'a mut ChannelStart>,
    /// A test waiting here may be stopped: a stepped channel's test is the daemon's alone (a
    /// cycler runs its own, which only the cycler can stop).
    pub stoppable: bool,
    /// Per channel, the test stopped while waiting: its output is switched off only when the
    /// device answers, which the channel keeps saying until then.
    stopped: Vec<Option<String>>,
}

impl<'a> Channels<'a> {
    /// A stepped channel: its waiting test may be stopped.
    pub fn stepped(start: &'a mut ChannelStart) -> Channels<'a> {
        Channels {
            starts: vec![start],
            stoppable: true,
            stopped: vec![None],
        }
    }

    /// A cycler's channels: their tests run on the cycler.
    pub fn native(starts: impl Iterator<Item = &'a mut ChannelStart>) -> Channels<'a> {
        let starts: Vec<_> = starts.collect();
        Channels {
            stopped: vec![None; starts.len()],
            starts,
            stoppable: false,
        }
    }
}

/// What an offline channel says: why its device does not answer, and what waits on it.
fn offline_reason(stopped: &Option<String>, why: &str) -> String {
    match stopped {
        Some(test) => format!(
            "test {test} was stopped; its output is switched off when the device answers. {why}"
        ),
        None => why.into(),
    }
}

impl Waiting for Channels<'_> {
    fn offline(&mut self, why: &str) {
        for (c, stopped) in self.starts.iter().zip(&self.stopped) {
            c.live.send_modify(|s| {
                s.state = "offline".into();
                s.reason = offline_reason(stopped, why);
                // An interrupted test waits for the device, and the channel says which.
                if let Some((checkpoint, _)) = &c.resume {
                    s.test_id.clone_from(&checkpoint.test_id);
                    s.cell_id = checkpoint
                        .metadata
                        .get("cell_id")
                        .cloned()
                        .unwrap_or_default();
                }
            });
        }
    }

    fn online(&mut self) {
        let stoppable = self.stoppable;
        for c in self.starts.iter() {
            c.live.send_modify(|s| match &c.resume {
                // Still not idle: the runner resumes (or ends) the test next.
                Some((checkpoint, _)) => {
                    s.reason = format!("the device answers; resuming test {}", checkpoint.test_id);
                }
                // A stepped channel is idle once its runner has switched the output off.
                None if stoppable => {
                    s.reason = "the device answers; switching its output off".into();
                }
                None => {
                    s.state = "idle".into();
                    s.reason.clear();
                }
            });
        }
    }

    fn refuse(&mut self, cx: &mut Context<'_>, why: &str) -> Poll<()> {
        for (c, stopped) in self.starts.iter_mut().zip(&mut self.stopped) {
            loop {
                let refusal =
                    || StartError::Device(format!("channel {} cannot act: {why}", c.spec.id));
                match c.cmds.poll_recv(cx) {
                    Poll::Pending => break,
                    Poll::Ready(None) => return Poll::Ready(()),
                    Poll::Ready(Some(ChannelCmd::Start { reply, .. })) => {
                        let _ = reply.send(Err(refusal()));
                    }
                    Poll::Ready(Some(ChannelCmd::Ping { reply })) => {
                        let _ = reply.send(());
                    }
                    Poll::Ready(Some(ChannelCmd::Stop { reason, reply })) => {
                        let answer = match c.resume.take() {
                            Some((cp, _)) if self.stoppable => {
                                stop_waiting(c, &cp, &reason, why);
                                // Ended, but the channel itself still waits for its device.
                                *stopped = Some(cp.test_id.clone());
                                c.live.send_modify(|s| {
                                    s.state = "offline".into();
                                    s.test_id.clear();
                                    s.reason = offline_reason(stopped, why);
                                });
                                Ok(())
                            }
                            Some(waiting) => {
                                c.resume = Some(waiting);
                                Err(refusal())
                            }
                            None => Err(StartError::NotRunning(c.spec.id.clone())),
                        };
                        let _ = reply.send(answer);
                    }
                }
            }
        }
        Poll::Pending
    }
}

/// Ends the test that waits on `c` for its device, as the operator asked (`reason`): the
/// device will find no test to resume when it answers.
fn stop_waiting(c: &ChannelStart, cp: &Checkpoint, reason: &str, why: &str) {
    if let Some(chamber) = &c.spec.chamber {
        chamber.release(&cp.test_id);
    }
    let asked = if reason.is_empty() {
        String::new()
    } else {
        format!(" ({reason})")
    };
    let reason = format!(
        "stopped{asked} while waiting after a restart: {why}; its output could not be \
         switched off then, and is switched off when the device answers"
    );
    TestJournal::reopen(&c.shared, cp).end_interrupted(&c.live, Ending::Stopped(reason));
}
