//! Where an export reads its test: the hub's database ([`Stored`]), or a running hub's query
//! service (`cyclerhub export --hub`, see `crate::remote`). The writers read only through
//! [`Source`], so both give the same files, byte for byte.

use cyclerd_proto::hub::CycleRow;

use super::ExportError;
use crate::store::{Equipment, EventRow, HubStore, SampleRow, StoreError, TestRow};

/// What an export reads of one test.
pub trait Source {
    /// The test's row (state, metadata, start and end).
    fn test(&mut self) -> Result<TestRow, ExportError>;
    /// The protocol it ran: its source and its compiled plan (JSON).
    fn protocol(&mut self) -> Result<(String, String), ExportError>;
    /// Its events, in time order (the `step` events name the plan step each step ran).
    fn events(&mut self) -> Result<Vec<EventRow>, ExportError>;
    /// The instruments it ran on.
    fn equipment(&mut self) -> Result<Vec<Equipment>, ExportError>;
    /// Whether any sample has a cell temperature, and a chamber air temperature.
    fn temperatures(&mut self) -> Result<(bool, bool), ExportError>;
    /// Its per-cycle rows: the daemon's, or computed from the samples when it sent none.
    fn cycle_rows(&mut self) -> Result<Vec<CycleRow>, ExportError>;
    /// The rows of the daemon's own summaries only: empty when it sent none.
    fn daemon_cycle_rows(&mut self) -> Result<Vec<CycleRow>, ExportError>;
    /// Hands every sample to `f` in `seq` order; returns how many.
    fn for_each_sample(
        &mut self,
        f: &mut dyn FnMut(&SampleRow) -> Result<(), ExportError>,
    ) -> Result<u64, ExportError>;
}

/// A test in the hub's database.
pub struct Stored<'a> {
    /// The database.
    pub store: &'a HubStore,
    /// The test's full id.
    pub test_id: &'a str,
}

impl Stored<'_> {
    fn missing(&self) -> StoreError {
        StoreError::NoSuchTest(self.test_id.to_owned())
    }
}

impl Source for Stored<'_> {
    fn test(&mut self) -> Result<TestRow, ExportError> {
        Ok(self
            .store
            .test(self.test_id)?
            .ok_or_else(|| self.missing())?)
    }

    fn protocol(&mut self) -> Result<(String, String), ExportError> {
        Ok(self
            .store
            .protocol(self.test_id)?
            .ok_or_else(|| self.missing())?)
    }

    fn events(&mut self) -> Result<Vec<EventRow>, ExportError> {
        Ok(self.store.events(self.test_id)?)
    }

    fn equipment(&mut self) -> Result<Vec<Equipment>, ExportError> {
        Ok(self.store.test_equipment(self.test_id)?)
    }

    fn temperatures(&mut self) -> Result<(bool, bool), ExportError> {
        Ok(self.store.has_temperatures(self.test_id)?)
    }

    fn cycle_rows(&mut self) -> Result<Vec<CycleRow>, ExportError> {
        let (summaries, _) = crate::cycles::summaries(self.store, self.test_id)?;
        Ok(crate::cycles::rows(&summaries))
    }

    fn daemon_cycle_rows(&mut self) -> Result<Vec<CycleRow>, ExportError> {
        Ok(crate::cycles::rows(&self.store.cycles(self.test_id)?))
    }

    fn for_each_sample(
        &mut self,
        f: &mut dyn FnMut(&SampleRow) -> Result<(), ExportError>,
    ) -> Result<u64, ExportError> {
        self.store.for_each_sample(self.test_id, f)
    }
}
