//! Where a simulator is reached besides a TCP port: a serial line on a pseudo-terminal linked
//! from a path (unix), and the folder a simulated Neware server reads step files from.

use super::SimCell;
use crate::signal::StopSignal;
use cyclerd_drivers::Clock;
use cyclerd_drivers::cell::CellParams;
use cyclerd_drivers::ea_psb::{PsbSim, sim::SimConfig};
use cyclerd_drivers::transport::Endpoint;
use std::path::PathBuf;

/// The folder a simulated Neware server reads step files from: the one given (created if
/// missing), or a temporary one removed when this is dropped.
pub(super) enum StepFolder {
    Given(PathBuf),
    Temporary(tempfile::TempDir),
}

impl StepFolder {
    pub(super) fn new(given: Option<PathBuf>) -> anyhow::Result<StepFolder> {
        Ok(match given {
            Some(dir) => {
                std::fs::create_dir_all(&dir).map_err(|e| {
                    anyhow::anyhow!("cannot create the step folder {}: {e}", dir.display())
                })?;
                // Absolute, so that the paths clients name match it whatever their directory.
                StepFolder::Given(std::path::absolute(&dir)?)
            }
            None => StepFolder::Temporary(
                tempfile::Builder::new()
                    .prefix("cyclerd-neware-steps-")
                    .tempdir()
                    .map_err(|e| anyhow::anyhow!("cannot create a temporary step folder: {e}"))?,
            ),
        })
    }

    pub(super) fn path(&self) -> &std::path::Path {
        match self {
            StepFolder::Given(dir) => dir,
            StepFolder::Temporary(dir) => dir.path(),
        }
    }

    pub(super) fn note(&self) -> &'static str {
        match self {
            StepFolder::Given(_) => "",
            StepFolder::Temporary(_) => " (temporary: removed on exit)",
        }
    }
}

/// A path linked to a simulator's pseudo-terminal, so a lab configuration can name a stable
/// port; the link goes when the simulator stops.
pub(super) struct SimLink {
    link: PathBuf,
    target: String,
}

impl SimLink {
    #[cfg(unix)]
    pub(super) fn new(endpoint: &Endpoint, link: PathBuf) -> anyhow::Result<SimLink> {
        let Endpoint::Serial { path, .. } = endpoint else {
            anyhow::bail!("{endpoint} is not a serial port");
        };
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(path, &link).map_err(|e| {
            anyhow::anyhow!("cannot link {} to the pseudo-terminal: {e}", link.display())
        })?;
        Ok(SimLink {
            link,
            target: path.clone(),
        })
    }
}

impl std::fmt::Display for SimLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (-> {})", self.link.display(), self.target)
    }
}

impl Drop for SimLink {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.link);
    }
}

#[cfg(unix)]
pub(super) fn psb_on_pty(
    config: SimConfig,
    clock: Clock,
    link: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::ea_psb::SimHandle, SimLink)> {
    let sim = PsbSim::spawn_serial(cyclerd_drivers::transport::pty::Pty::open()?, config, clock)?;
    let link = SimLink::new(&sim.endpoint(), link)?;
    Ok((sim, link))
}

#[cfg(not(unix))]
pub(super) fn psb_on_pty(
    _: SimConfig,
    _: Clock,
    _: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::ea_psb::SimHandle, SimLink)> {
    anyhow::bail!("simulated serial devices need a pseudo-terminal, which this system lacks")
}

#[cfg(unix)]
pub(super) fn scpi_on_pty(
    config: cyclerd_drivers::scpi::SimConfig,
    cell: CellParams,
    clock: Clock,
    link: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::scpi::SimHandle, SimLink)> {
    let pty = cyclerd_drivers::transport::pty::Pty::open()?;
    let sim = cyclerd_drivers::scpi::ScpiSim::spawn(pty, config, cell, clock)?;
    let link = SimLink::new(&sim.endpoint(), link)?;
    Ok((sim, link))
}

#[cfg(not(unix))]
pub(super) fn scpi_on_pty(
    _: cyclerd_drivers::scpi::SimConfig,
    _: CellParams,
    _: Clock,
    _: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::scpi::SimHandle, SimLink)> {
    anyhow::bail!("simulated serial devices need a pseudo-terminal, which this system lacks")
}

#[cfg(unix)]
pub(super) fn binder_on_pty(
    config: cyclerd_drivers::binder::SimConfig,
    clock: Clock,
    link: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::binder::SimHandle, SimLink)> {
    let pty = cyclerd_drivers::transport::pty::Pty::open()?;
    let sim = cyclerd_drivers::binder::BinderSim::spawn(pty, config, clock)?;
    let link = SimLink::new(&sim.endpoint(), link)?;
    Ok((sim, link))
}

#[cfg(not(unix))]
pub(super) fn binder_on_pty(
    _: cyclerd_drivers::binder::SimConfig,
    _: Clock,
    _: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::binder::SimHandle, SimLink)> {
    anyhow::bail!("simulated serial devices need a pseudo-terminal, which this system lacks")
}

#[cfg(unix)]
pub(super) fn espec_on_pty(
    config: cyclerd_drivers::espec::SimConfig,
    clock: Clock,
    link: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::espec::SimHandle, SimLink)> {
    let pty = cyclerd_drivers::transport::pty::Pty::open()?;
    let sim = cyclerd_drivers::espec::EspecSim::spawn(pty, config, clock)?;
    let link = SimLink::new(&sim.endpoint(), link)?;
    Ok((sim, link))
}

#[cfg(not(unix))]
pub(super) fn espec_on_pty(
    _: cyclerd_drivers::espec::SimConfig,
    _: Clock,
    _: PathBuf,
) -> anyhow::Result<(cyclerd_drivers::espec::SimHandle, SimLink)> {
    anyhow::bail!("simulated serial devices need a pseudo-terminal, which this system lacks")
}

#[cfg(unix)]
pub(super) async fn riden(
    model: u16,
    link: Option<PathBuf>,
    serial: u32,
    cell: SimCell,
    stop: StopSignal,
) -> anyhow::Result<()> {
    use cyclerd_drivers::riden::{self, RidenSim};
    anyhow::ensure!(
        cyclerd_drivers::riden::wire::Model::from_number(model).is_some(),
        "unknown Riden model {model}; use 6006, 6012, 6018 or 6024"
    );
    let pty = cyclerd_drivers::transport::pty::Pty::open()?;
    let config = riden::sim::SimConfig::rd60xx(model, serial, cell.params()?);
    let sim = RidenSim::spawn(pty, config, Clock::scaled(cell.speed))?;
    let endpoint = Endpoint::Serial {
        path: sim.path().to_string_lossy().into_owned(),
        baud: riden::wire::BAUD_RATE,
    };
    let link = link.map(|l| SimLink::new(&endpoint, l)).transpose()?;
    let shown = match &link {
        Some(link) => link.to_string(),
        None => sim.path().display().to_string(),
    };
    println!(
        "simulated Riden RD{model} on {shown}, Modbus RTU 115200 8N1 unit 1, at {}x; Ctrl-C stops it",
        cell.speed
    );
    stop.wait().await;
    Ok(())
}

#[cfg(not(unix))]
pub(super) async fn riden(
    _: u16,
    _: Option<PathBuf>,
    _: u32,
    _: SimCell,
    _: StopSignal,
) -> anyhow::Result<()> {
    anyhow::bail!("the simulated Riden needs a pseudo-terminal, which this system lacks")
}
