//! `cyclerd.hub.v1.Query`: find tests, read their samples (columns and a time range of them),
//! and follow a running test live.
//!
//! Reads go through [`HubStore`]'s reader on blocking threads, never the ingest writer. `Tail`
//! sleeps on the server's "something was applied" signal rather than polling the database.
//!
//! When the hub requires tokens, every call needs one (`UNAUTHENTICATED` otherwise) and sees
//! only the token's lab: `ListTests` lists that lab's tests, and a test of another lab is
//! `PERMISSION_DENIED`, exactly like an id the hub does not have (AIP-211: permission is checked
//! before existence, so one lab cannot probe for another's test ids).
//!
//! The service and its access rule are here; `samples.rs` reads samples (columns, windows,
//! pages, CSV), `catalog.rs` lists tests and cells and details a test, and [`crate::cycles`]
//! gives a test's per-cycle results.

mod catalog;
mod samples;

use std::pin::Pin;

use cyclerd_proto::hub::query_server::Query;
use cyclerd_proto::hub::{
    GetMetadataSchemasRequest, GetTestRequest, ListCellsRequest, ListCellsResponse,
    ListCyclesRequest, ListCyclesResponse, ListTestsRequest, ListTestsResponse, MetadataSchema,
    MetadataSchemas, ReadSamplesRequest, TailRequest, TestDetail,
};
use cyclerd_proto::ingest::SampleBatch;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::auth::{Authenticator, Caller, Recheck};
use crate::store::{HubStore, StoreError, TestRow};
pub use catalog::{STATES, TestFilter, cell, cells_of, detail, summary};
use samples::read_page;
pub use samples::{
    COLUMNS, Column, Columns, CsvWriter, NO_PLAN_STEP, PAGE, check_window, column, read_batches,
};

/// A store failure as a gRPC status (an unknown test is `NOT_FOUND`); HTTP maps it on.
pub fn status(e: StoreError) -> Status {
    match e {
        StoreError::NoSuchTest(_) => Status::not_found(e.to_string()),
        e => Status::internal(crate::store::error_chain(&e)),
    }
}

type BatchStream = Pin<Box<dyn futures::Stream<Item = Result<SampleBatch, Status>> + Send>>;

/// The service; `applied` changes whenever the ingest side committed something.
#[derive(Clone)]
pub struct QueryService {
    /// Where the tests are (read through its reader connection).
    pub store: HubStore,
    /// Bumped after every ingest commit: wakes the tails.
    pub applied: watch::Receiver<u64>,
    /// Checks each call's token and says whose lab it may read, when the hub requires tokens.
    pub auth: Authenticator,
    /// How long a tail's token holds before it is checked again.
    pub token_recheck: std::time::Duration,
    /// Turns true when the hub shuts down: a tail follows a running test for days and would
    /// hold the server's graceful shutdown forever, so it ends itself.
    pub stop: watch::Receiver<bool>,
    /// Times each call, for `/metrics`.
    pub metrics: crate::metrics::HubMetrics,
}

/// The test `test_id` and its lab, if `caller` may read it. With a caller, another lab's test
/// and an unknown id get the same `PERMISSION_DENIED`; without (no tokens required), an unknown
/// id is `NOT_FOUND`. Blocking. The one access rule of a test, for gRPC and HTTP alike.
pub fn readable_test(
    store: &HubStore,
    test_id: &str,
    caller: Option<&Caller>,
) -> Result<(TestRow, String), Status> {
    let test = store.test(test_id).map_err(status)?;
    let lab = match &test {
        Some(t) => store
            .daemon_labs()
            .map_err(status)?
            .remove(&t.daemon_id)
            .unwrap_or_default(),
        None => String::new(),
    };
    match (test, caller) {
        (Some(t), Some(c)) if lab == c.lab => Ok((t, lab)),
        (_, Some(c)) => Err(Status::permission_denied(format!(
            "test {test_id:?} is not a test of lab {:?}, the only lab token {:?} may read",
            c.lab, c.name
        ))),
        (Some(t), None) => Ok((t, lab)),
        (None, None) => Err(status(StoreError::NoSuchTest(test_id.into()))),
    }
}

/// The lab a list of `what` (tests, cells) asked for `requested` (empty: any) covers: with a
/// caller, its token's lab only (another lab is `PERMISSION_DENIED`); without, as asked.
pub fn scoped_lab(
    caller: Option<&Caller>,
    requested: String,
    what: &str,
) -> Result<String, Status> {
    match caller {
        Some(c) if !requested.is_empty() && requested != c.lab => {
            Err(Status::permission_denied(format!(
                "token {:?} may list only the {what} of lab {:?}, not of lab {requested:?}",
                c.name, c.lab
            )))
        }
        Some(c) => Ok(c.lab.clone()),
        None => Ok(requested),
    }
}

impl QueryService {
    /// Authenticates the call and checks that its caller may read `test_id`; the test and its
    /// lab.
    async fn readable(
        &self,
        metadata: &tonic::metadata::MetadataMap,
        test_id: &str,
    ) -> Result<(TestRow, String), Status> {
        let caller = self.auth.caller(metadata).await?;
        let (store, id) = (self.store.clone(), test_id.to_owned());
        tokio::task::spawn_blocking(move || readable_test(&store, &id, caller.as_ref()))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
    }
}

#[tonic::async_trait]
impl Query for QueryService {
    async fn list_tests(
        &self,
        request: Request<ListTestsRequest>,
    ) -> Result<Response<ListTestsResponse>, Status> {
        let _timer = self.metrics.query("grpc", "ListTests");
        let caller = self.auth.caller(request.metadata()).await?;
        let mut filter = TestFilter::from(request.into_inner());
        filter.lab = scoped_lab(caller.as_ref(), filter.lab, "tests")?;
        filter.check().map_err(Status::invalid_argument)?;
        let store = self.store.clone();
        let tests = tokio::task::spawn_blocking(move || filter.select(&store))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(ListTestsResponse {
            tests: tests.iter().map(|(t, lab)| summary(t, lab)).collect(),
        }))
    }

    async fn get_test(
        &self,
        request: Request<GetTestRequest>,
    ) -> Result<Response<TestDetail>, Status> {
        let _timer = self.metrics.query("grpc", "GetTest");
        let (t, lab) = self
            .readable(request.metadata(), &request.get_ref().test_id)
            .await?;
        let store = self.store.clone();
        let detail = tokio::task::spawn_blocking(move || detail(&store, &t, &lab))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(detail))
    }

    type ReadSamplesStream = BatchStream;

    async fn read_samples(
        &self,
        request: Request<ReadSamplesRequest>,
    ) -> Result<Response<Self::ReadSamplesStream>, Status> {
        let _timer = self.metrics.query("grpc", "ReadSamples");
        self.readable(request.metadata(), &request.get_ref().test_id)
            .await?;
        // A long read outlives a revoked token by one page at most.
        let mut recheck = Recheck::new(
            self.auth.clone(),
            request.metadata().clone(),
            self.token_recheck,
        );
        let r = request.into_inner();
        let mut cols = Columns::parse(&r.columns).map_err(Status::invalid_argument)?;
        if r.with_plan_step {
            cols = cols.with_plan_step();
        }
        let window = (r.from_test_time_s, r.to_test_time_s);
        check_window(window.0, window.1).map_err(Status::invalid_argument)?;
        let store = self.store.clone();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut from = 0;
            loop {
                if let Err(status) = recheck.still_valid().await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                match read_page(&store, &r.test_id, &cols, from, window, &tx).await {
                    Ok((_, next, true)) if !tx.is_closed() => from = next,
                    Ok(_) => return,
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type TailStream = BatchStream;

    async fn tail(
        &self,
        request: Request<TailRequest>,
    ) -> Result<Response<Self::TailStream>, Status> {
        let _timer = self.metrics.query("grpc", "Tail");
        self.readable(request.metadata(), &request.get_ref().test_id)
            .await?;
        // A tail may follow a test for days: a revoked token ends it.
        let mut recheck = Recheck::new(
            self.auth.clone(),
            request.metadata().clone(),
            self.token_recheck,
        );
        let r = request.into_inner();
        let store = self.store.clone();
        let mut applied = self.applied.clone();
        let mut stop = self.stop.clone();
        let (tx, rx) = mpsc::channel(4);
        let cols = Columns::parse(&[]).map_err(Status::invalid_argument)?;
        tokio::spawn(async move {
            let mut from = r.from_seq;
            loop {
                if let Err(status) = recheck.still_valid().await {
                    let _ = tx.send(Err(status)).await;
                    return;
                }
                applied.borrow_and_update();
                match read_page(&store, &r.test_id, &cols, from, (0.0, 0.0), &tx).await {
                    Ok((t, next, more)) => {
                        from = next;
                        let ended =
                            t.outcome.is_some() && t.expected_samples.is_some_and(|n| next >= n);
                        if ended || tx.is_closed() {
                            return;
                        }
                        if more {
                            // Catching up: the next page at once (after the token check).
                            continue;
                        }
                    }
                    Err(status) => {
                        let _ = tx.send(Err(status)).await;
                        return;
                    }
                }
                let stopping = tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return } else { false },
                    _ = tx.closed() => return,
                    () = recheck.due() => false,
                    _ = stop.wait_for(|s| *s) => true,
                };
                if stopping {
                    let why = format!(
                        "the hub is shutting down; tail again from seq {from} once it is back"
                    );
                    let _ = tx.send(Err(Status::unavailable(why))).await;
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn list_cycles(
        &self,
        request: Request<ListCyclesRequest>,
    ) -> Result<Response<ListCyclesResponse>, Status> {
        let _timer = self.metrics.query("grpc", "ListCycles");
        let (t, _) = self
            .readable(request.metadata(), &request.get_ref().test_id)
            .await?;
        let store = self.store.clone();
        let cycles = tokio::task::spawn_blocking(move || crate::cycles::list(&store, &t.test_id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(cycles))
    }

    async fn list_cells(
        &self,
        request: Request<ListCellsRequest>,
    ) -> Result<Response<ListCellsResponse>, Status> {
        let _timer = self.metrics.query("grpc", "ListCells");
        let caller = self.auth.caller(request.metadata()).await?;
        let lab = scoped_lab(caller.as_ref(), request.into_inner().lab, "cells")?;
        let store = self.store.clone();
        let cells = tokio::task::spawn_blocking(move || cells_of(&store, &lab))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(ListCellsResponse {
            cells: cells.iter().map(cell).collect(),
        }))
    }

    async fn get_metadata_schemas(
        &self,
        request: Request<GetMetadataSchemasRequest>,
    ) -> Result<Response<MetadataSchemas>, Status> {
        let _timer = self.metrics.query("grpc", "GetMetadataSchemas");
        let caller = match self.auth.caller(request.metadata()).await? {
            Some(c) => Some(c),
            // A hub without tokens ignores one that is not valid, as its uploads do.
            None => self.auth.presented(request.metadata()).await.ok().flatten(),
        };
        let mut lab = request.into_inner().lab;
        match caller {
            Some(c) if !lab.is_empty() && lab != c.lab => {
                return Err(Status::permission_denied(format!(
                    "token {:?} may read only the metadata schemas of lab {:?}, not of lab {lab:?}",
                    c.name, c.lab
                )));
            }
            Some(c) => lab = c.lab,
            None if lab.is_empty() => {
                return Err(Status::invalid_argument(
                    "name the lab whose metadata schemas you want (without a token the hub does \
                     not know the caller's lab; set the daemon's hub.lab)",
                ));
            }
            None => {}
        }
        let store = self.store.clone();
        let name = lab.clone();
        let schemas = tokio::task::spawn_blocking(move || store.metadata_schemas(&name))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(status)?;
        Ok(Response::new(MetadataSchemas {
            lab,
            schemas: schemas
                .into_iter()
                .map(|s| MetadataSchema {
                    tier: s.tier,
                    schema_json: s.schema_json,
                    updated_unix_s: s.updated_unix_s,
                })
                .collect(),
        }))
    }
}
