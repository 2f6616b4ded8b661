//! GET_CHANNELS_INFO and its feedback: one block per channel, with its aux values.

use super::{
    AUX_VALUE_LEN, CHANNEL_INFO_LEN, EXIT_CONDITION_LEN, Frame, SCHEDULE_CHARS, STEP_AND_CYCLE_LEN,
    TEST_NAME_CHARS, WireError, Writer, aux, cmd, feedback_code, field, reader,
};
use crate::codec::Cursor;

/// GET_CHANNELS_INFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChannelsInfoRequest {
    /// The channel (from 0), or -1 for all. Real servers have been seen to answer every
    /// channel even when one is asked for, so replies are matched by their own index.
    pub channel: i16,
    /// Which channels an all-channels request lists ([`selection`](super::selection)).
    pub selection: i16,
    /// What each channel block adds ([`need`](super::need)).
    pub need: u32,
}

impl ChannelsInfoRequest {
    const LEN: usize = 40;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .bytes(&self.channel.to_le_bytes())
            .bytes(&self.selection.to_le_bytes())
            .bytes(&self.need.to_le_bytes())
            .zeros(32)
            .frame(cmd::GET_CHANNELS_INFO)
    }

    pub fn from_frame(frame: &Frame) -> Result<ChannelsInfoRequest, WireError> {
        let mut r = reader(
            "GET_CHANNELS_INFO",
            frame,
            cmd::GET_CHANNELS_INFO,
            Self::LEN,
        )?;
        Ok(ChannelsInfoRequest {
            channel: r.i16()?,
            selection: r.i16()?,
            need: r.u32()?,
        })
    }
}

/// One aux reading.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AuxValue {
    pub value: f32,
    /// Its rate of change, per second.
    pub dxdt: f32,
}

/// One channel's block in the GET_CHANNELS_INFO feedback.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelInfo {
    /// The channel's own index, from 0: what a reply is matched by.
    pub channel: u32,
    /// See [`status`](super::status).
    pub status: i16,
    /// MITS lost contact with the channel's unit; the other fields are the last known.
    pub comm_failure: bool,
    /// The assigned schedule's name.
    pub schedule: String,
    /// The test on the channel (or the last one); empty when none ran since MITS started.
    pub test_name: String,
    /// Why the test left its last step or ended, as MITS words it.
    pub exit_condition: String,
    /// Step and cycle as MITS formats them for display (see [`ChannelInfo::step_and_cycle`]).
    pub step_and_cycle_text: String,
    pub barcode: String,
    /// CAN and SMBus configuration names.
    pub can_config: String,
    pub smb_config: String,
    /// The master of a parallel group.
    pub master_channel: u16,
    /// Since the test started and since the step started, s.
    pub test_time_s: f64,
    pub step_time_s: f64,
    /// V, A (positive = charge), W.
    pub voltage_v: f32,
    pub current_a: f32,
    pub power_w: f32,
    /// The test's counters, Ah and Wh.
    pub charge_capacity_ah: f32,
    pub discharge_capacity_ah: f32,
    pub charge_energy_wh: f32,
    pub discharge_energy_wh: f32,
    /// Ohm, V/s, ohm, ohm, degrees.
    pub internal_resistance_ohm: f32,
    pub dvdt_v_per_s: f32,
    pub acr_ohm: f32,
    pub aci_ohm: f32,
    pub aci_phase_deg: f32,
    /// Aux readings by kind ([`aux`]); empty unless asked for with [`need::AUX`](super::need::AUX).
    pub aux: [Vec<AuxValue>; aux::KINDS],
}

impl ChannelInfo {
    fn write(&self, w: Writer) -> Writer {
        let mut w = w
            .bytes(&self.channel.to_le_bytes())
            .bytes(&self.status.to_le_bytes())
            .bytes(&[u8::from(self.comm_failure)])
            .wide(&self.schedule, SCHEDULE_CHARS)
            .wide(&self.test_name, TEST_NAME_CHARS)
            .ascii(&self.exit_condition, EXIT_CONDITION_LEN)
            .ascii(&self.step_and_cycle_text, STEP_AND_CYCLE_LEN)
            .wide(&self.barcode, TEST_NAME_CHARS)
            .wide(&self.can_config, SCHEDULE_CHARS)
            .wide(&self.smb_config, SCHEDULE_CHARS)
            .bytes(&self.master_channel.to_le_bytes())
            .bytes(&self.test_time_s.to_le_bytes())
            .bytes(&self.step_time_s.to_le_bytes());
        for v in [
            self.voltage_v,
            self.current_a,
            self.power_w,
            self.charge_capacity_ah,
            self.discharge_capacity_ah,
            self.charge_energy_wh,
            self.discharge_energy_wh,
            self.internal_resistance_ohm,
            self.dvdt_v_per_s,
            self.acr_ohm,
            self.aci_ohm,
            self.aci_phase_deg,
        ] {
            w = w.bytes(&v.to_le_bytes());
        }
        for values in &self.aux {
            // A count past u16 cannot be sent; no channel has that many inputs.
            w = w.bytes(&(values.len().min(usize::from(u16::MAX)) as u16).to_le_bytes());
        }
        // BMS and SMB counts: their values' layout is not public, so none are sent.
        w = w.zeros(4);
        for values in &self.aux {
            for v in values.iter().take(usize::from(u16::MAX)) {
                w = w.bytes(&v.value.to_le_bytes()).bytes(&v.dxdt.to_le_bytes());
            }
        }
        w
    }

    fn read(r: &mut Cursor<'_>) -> Result<ChannelInfo, WireError> {
        let mut c = ChannelInfo {
            channel: r.u32()?,
            status: r.i16()?,
            comm_failure: r.u8()? != 0,
            schedule: r.wide(SCHEDULE_CHARS)?,
            test_name: r.wide(TEST_NAME_CHARS)?,
            exit_condition: r.ascii(EXIT_CONDITION_LEN)?,
            step_and_cycle_text: r.ascii(STEP_AND_CYCLE_LEN)?,
            barcode: r.wide(TEST_NAME_CHARS)?,
            can_config: r.wide(SCHEDULE_CHARS)?,
            smb_config: r.wide(SCHEDULE_CHARS)?,
            master_channel: r.u16()?,
            test_time_s: r.f64()?,
            step_time_s: r.f64()?,
            ..ChannelInfo::default()
        };
        for v in [
            &mut c.voltage_v,
            &mut c.current_a,
            &mut c.power_w,
            &mut c.charge_capacity_ah,
            &mut c.discharge_capacity_ah,
            &mut c.charge_energy_wh,
            &mut c.discharge_energy_wh,
            &mut c.internal_resistance_ohm,
            &mut c.dvdt_v_per_s,
            &mut c.acr_ohm,
            &mut c.aci_ohm,
            &mut c.aci_phase_deg,
        ] {
            *v = r.f32()?;
        }
        let mut counts = [0usize; aux::KINDS];
        for n in &mut counts {
            *n = usize::from(r.u16()?);
        }
        let (bms, smb) = (r.u16()?, r.u16()?);
        if bms != 0 || smb != 0 {
            return Err(field(
                "bms_count/smb_count",
                format!(
                    "channel {} reports {bms} BMS and {smb} SMB values, whose layout is not \
                     public (they are only sent when asked for)",
                    c.channel
                ),
            ));
        }
        for (kind, &n) in counts.iter().enumerate() {
            // Checked against what is there before allocating for a count off the wire.
            if n * AUX_VALUE_LEN > r.remaining() {
                return Err(r.lacks("channel info aux values", n * AUX_VALUE_LEN).into());
            }
            c.aux[kind] = (0..n)
                .map(|_| {
                    Ok(AuxValue {
                        value: r.f32()?,
                        dxdt: r.f32()?,
                    })
                })
                .collect::<Result<_, WireError>>()?;
        }
        Ok(c)
    }

    /// Step and cycle read from [`ChannelInfo::step_and_cycle_text`]: its first two unsigned
    /// integers (the field's format is not public; MITS shows both numbers in it, step
    /// first). 0 for what is missing.
    pub fn step_and_cycle(&self) -> (u32, u32) {
        let mut numbers = self
            .step_and_cycle_text
            .split(|c: char| !c.is_ascii_digit())
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u32>().unwrap_or(u32::MAX));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    }

    /// The first temperature aux reading, °C.
    pub fn temperature_c(&self) -> Option<f64> {
        self.aux[aux::TEMPERATURE]
            .first()
            .map(|v| f64::from(v.value))
            .filter(|t| t.is_finite())
    }
}

/// The GET_CHANNELS_INFO feedback: one frame listing channels in the server's order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ChannelsInfo {
    pub channels: Vec<ChannelInfo>,
}

impl ChannelsInfo {
    pub fn to_frame(&self) -> Frame {
        let mut w = Writer::default().bytes(&(self.channels.len() as u32).to_le_bytes());
        for c in &self.channels {
            w = c.write(w);
        }
        w.frame(feedback_code(cmd::GET_CHANNELS_INFO))
    }

    pub fn from_frame(frame: &Frame) -> Result<ChannelsInfo, WireError> {
        let what = "GET_CHANNELS_INFO feedback";
        let mut r = reader(what, frame, feedback_code(cmd::GET_CHANNELS_INFO), 4)?;
        let count = r.u32()? as usize;
        if count.saturating_mul(CHANNEL_INFO_LEN) > r.remaining() {
            return Err(field(
                "number_of_channels",
                format!("{count} channels do not fit in {} bytes", frame.args.len()),
            ));
        }
        let channels = (0..count)
            .map(|_| ChannelInfo::read(&mut r))
            .collect::<Result<Vec<_>, _>>()?;
        if r.remaining() != 0 {
            return Err(field(
                "number_of_channels",
                format!(
                    "{} bytes follow the {count} channels it announces",
                    r.remaining()
                ),
            ));
        }
        Ok(ChannelsInfo { channels })
    }
}
