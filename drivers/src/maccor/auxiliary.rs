//! The (4,4) auxiliary values of a channel, and the cell temperature read from them for
//! [`Cycler::cell_temperature`](crate::cycler::Cycler::cell_temperature): MacNet's downloaded
//! records carry no temperature, so a daemon supervising "Temp >= 55 degC -> end" on a Maccor
//! channel asks for it here.
//!
//! **Assumption**: the aux input at [`MaccorConfig::temperature_aux`] (default the first) is
//! the cell's temperature in degC. MacNet's reply does not say what an input measures (that is
//! set up on the tester), so this is configuration, not something the client can check.
//!
//! [`MaccorConfig::temperature_aux`]: super::MaccorConfig::temperature_aux
//!
//! Tolerance: a reply without values (no `AuxValues`, `null`, an empty list, or fewer values
//! than the configured index) is no reading, `Ok(None)`; so is a tester whose MacNet does not
//! offer (4,4) ("Invalid FNum"). A `Len` that disagrees with the list is ignored. A reply for
//! another channel is refused, never attributed: a temperature limit must not act on another
//! cell's temperature.

use super::client::MaccorClient;
use super::convert::channel_name;
use super::link::bad_reply;
use super::wire::{self, AuxValues};
use crate::DriverError;
use serde_json::Map;

impl MaccorClient {
    /// (4,4): the present values of `chan`'s auxiliary inputs, in the tester's order (empty
    /// when the channel has none).
    pub async fn aux_values(&mut self, chan: u16) -> Result<Vec<f64>, DriverError> {
        let during = "reading auxiliary values (4,4)";
        let (got, fields) = self
            .call(wire::AUX_VALUES, Some(chan), Map::new(), during)
            .await?;
        if got.is_some_and(|g| g != chan) {
            return Err(bad_reply(
                during,
                format!(
                    "aux values for {}, to a request for channel {chan}",
                    channel_name(got)
                ),
            ));
        }
        let aux = AuxValues::from_json(&fields).map_err(|e| bad_reply(during, e.to_string()))?;
        Ok(aux.values)
    }

    /// The cell temperature on `chan`, degC: the (4,4) value at
    /// [`MaccorConfig::temperature_aux`](super::MaccorConfig::temperature_aux); `Ok(None)`
    /// when there is none (see the module doc).
    pub async fn temperature(&mut self, chan: u16) -> Result<Option<f64>, DriverError> {
        let Some(index) = self.config.temperature_aux else {
            return Ok(None);
        };
        match self.aux_values(chan).await {
            Ok(values) => Ok(values.get(index).copied()),
            Err(DriverError::Unsupported(why)) => {
                tracing::debug!("channel {chan}: no cell temperature: {why}");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Clock;
    use crate::cell::{CellParams, Chemistry};
    use crate::cycler::{ChannelAddr, Cycler};
    use crate::maccor::{MaccorConfig, MaccorSim, SimConfig, SimHandle};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    const TIMEOUT: Duration = Duration::from_secs(5);

    fn addr(channel: u32) -> ChannelAddr {
        ChannelAddr {
            unit: 0,
            sub_unit: 0,
            channel,
        }
    }

    /// Three channels; the cell of channel 1 warmer than the default; channel 2 without aux
    /// inputs.
    async fn tester() -> (SimHandle, Clock) {
        let cell = CellParams {
            initial_soc: 0.5,
            ..CellParams::new(Chemistry::Nmc, 2.5)
        };
        let mut config = SimConfig::new(3, cell);
        config.cells[1].ambient_c = 41.5;
        config.aux_inputs = vec![1, 2, 0];
        let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let binary = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let clock = Clock::manual();
        let sim = MaccorSim::spawn(json, binary, config, clock.clone()).unwrap();
        (sim, clock)
    }

    #[tokio::test]
    async fn the_temperature_read_is_the_simulated_cells_over_a_real_socket() {
        let (sim, clock) = tester().await;
        let mut client = MaccorClient::connect(sim.client_config(TIMEOUT))
            .await
            .unwrap();
        assert_eq!(client.system_info().aux_channels, 3);
        // Channel 0 charges at 5 A in direct mode for ten minutes: its cell warms.
        let start = wire::DirectStart {
            test_name: "warm".into(),
            output: wire::Output {
                current_a: 5.0,
                voltage_v: wire::IGNORE,
                power_w: wire::IGNORE,
                resistance_ohm: 0.0,
                range: 4,
                mode: wire::Mode::Charge,
            },
            record_every_s: 10.0,
            record_dv: 0.0,
            record_di: 0.0,
        };
        let during = "starting direct mode (6,7)";
        let code = client
            .command_json(wire::DIRECT_START, 0, start.to_json(), during)
            .await
            .unwrap();
        assert_eq!(code, wire::result::OK);
        clock.advance(600.0);
        for chan in [0u16, 1] {
            let t = client.cell_temperature(addr(chan.into())).await.unwrap();
            let want = sim.snapshot(chan).temperature_c;
            // JSON carries the f64 in shortest form; allow its last bit.
            let t = t.unwrap_or_else(|| panic!("no temperature on channel {chan}"));
            assert!((t - want).abs() < 1e-9, "channel {chan}: {t} vs {want}");
        }
        assert!(sim.snapshot(0).temperature_c > 30.0);
        assert_eq!(sim.snapshot(1).temperature_c, 41.5);
        // The second input of channel 1 reads the air around the cell.
        assert_eq!(client.aux_values(1).await.unwrap(), vec![41.5, 41.5]);
        // No aux inputs: Len 0, an empty list, no reading.
        assert_eq!(client.aux_values(2).await.unwrap(), Vec::<f64>::new());
        assert_eq!(client.cell_temperature(addr(2)).await.unwrap(), None);
        // A channel the tester does not have is the usual identity error.
        assert!(matches!(
            client.cell_temperature(addr(3)).await,
            Err(DriverError::Identity(_))
        ));
    }

    #[tokio::test]
    async fn the_aux_index_is_configurable_and_none_reads_nothing() {
        let (sim, _clock) = tester().await;
        let config = MaccorConfig {
            temperature_aux: Some(1),
            ..sim.client_config(TIMEOUT)
        };
        let mut client = MaccorClient::connect(config).await.unwrap();
        assert_eq!(client.cell_temperature(addr(1)).await.unwrap(), Some(41.5));
        // Channel 0 has one input only.
        assert_eq!(client.cell_temperature(addr(0)).await.unwrap(), None);
        let config = MaccorConfig {
            temperature_aux: None,
            ..sim.client_config(TIMEOUT)
        };
        let mut client = MaccorClient::connect(config).await.unwrap();
        assert_eq!(client.cell_temperature(addr(0)).await.unwrap(), None);
    }

    /// A JSON tester that answers (1,2) and (4,4) with `aux` (the result fields after FClass
    /// and FNum; empty: "Invalid FNum", as a MacNet without (4,4)), for replies the simulator
    /// never gives.
    async fn scripted(sim: &SimHandle, aux: &'static str) -> MaccorConfig {
        let json = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let config = MaccorConfig {
            json_port: json.local_addr().unwrap().port(),
            ..sim.client_config(TIMEOUT)
        };
        tokio::spawn(async move {
            let (mut stream, _) = json.accept().await.unwrap();
            let mut splitter = wire::JsonSplitter::new(wire::MAX_JSON_OBJECT);
            let mut chunk = [0u8; 4096];
            loop {
                let Ok(n) = stream.read(&mut chunk).await else {
                    return;
                };
                if n == 0 {
                    return;
                }
                splitter.push(&chunk[..n]);
                while let Ok(Some(object)) = splitter.next_object() {
                    let req = wire::parse_json_request(&String::from_utf8_lossy(&object)).unwrap();
                    let id = &req.id;
                    let reply = if req.function == wire::AUX_VALUES && aux.is_empty() {
                        wire::json_error_line(id, wire::json_error::INVALID_FNUM)
                    } else if req.function == wire::AUX_VALUES {
                        format!(
                            r#"{{"jsonrpc":"2.0","result":{{"FClass":4,"FNum":4,{aux}}},"id":{id}}}"#
                        )
                    } else {
                        let info = wire::SystemInfo {
                            system_id: "scripted".into(),
                            system_type: 0,
                            controller_boards: 1,
                            test_channels: 4,
                            aux_boards: 1,
                            aux_channels: 4,
                        };
                        wire::json_result(id, req.function, None, info.to_json())
                    };
                    stream.write_all(reply.as_bytes()).await.unwrap();
                }
            }
        });
        config
    }

    async fn read(sim: &SimHandle, aux: &'static str) -> Result<Option<f64>, DriverError> {
        let mut client = MaccorClient::connect(scripted(sim, aux).await)
            .await
            .unwrap();
        client.cell_temperature(addr(1)).await
    }

    #[tokio::test]
    async fn tolerated_and_refused_replies() {
        let (sim, _clock) = tester().await;
        // Len disagreeing with the list: the list counts.
        let t = read(&sim, r#""Chan":1,"Len":3,"AuxValues":[24.7545490264893]"#).await;
        assert_eq!(t.unwrap(), Some(24.7545490264893));
        // Missing, null or empty: no reading.
        for aux in [
            r#""Chan":1,"Len":0"#,
            r#""Chan":1,"Len":1,"AuxValues":null"#,
            r#""Chan":1,"Len":1,"AuxValues":[]"#,
        ] {
            assert_eq!(read(&sim, aux).await.unwrap(), None, "{aux}");
        }
        // A MacNet without (4,4): no reading.
        assert_eq!(read(&sim, "").await.unwrap(), None);
        // Not numbers: a clear error naming the field.
        let e = read(&sim, r#""Chan":1,"AuxValues":["hot"]"#)
            .await
            .unwrap_err();
        assert!(matches!(e, DriverError::BadReply { .. }), "{e}");
        assert!(e.to_string().contains("AuxValues"), "{e}");
        // For another channel (as the public example's Chan 93): refused, not attributed.
        let e = read(&sim, r#""Chan":93,"Len":1,"AuxValues":[24.75]"#)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("for channel 93"), "{e}");
    }
}
