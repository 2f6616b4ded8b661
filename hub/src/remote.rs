//! `cyclerhub tests|show|cells|samples|cycles --hub URL`: the same reads as `--db`, asked of a running hub over
//! its `cyclerd.hub.v1.Query` service (TLS with the lab CA, a token when the hub requires one),
//! for people who may read the lab's data but not open its database.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context as _, Result, anyhow, bail};
use cyclerd_proto::hub::query_client::QueryClient;
use cyclerd_proto::hub::{
    Cell, GetMetadataSchemasRequest, GetTestRequest, ListCellsRequest, ListCyclesRequest,
    ListCyclesResponse, ListTestsRequest, ReadSamplesRequest, TailRequest, TestDetail, TestSummary,
};
use cyclerd_proto::ingest::SampleBatch;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::query::{Columns, TestFilter};

mod source;
pub use source::RemoteTest;

/// Largest answer accepted from the hub: a long test list comes in one message.
const MAX_RESPONSE_SIZE: usize = 64 << 20;

/// A connection to a hub's query service, with the token to show it.
pub struct Remote {
    /// The hub's URL as given, to name it in messages.
    url: String,
    /// The query service.
    client: QueryClient<Channel>,
    /// `Bearer <token>`, sent with every call; `None` without --token-file.
    authorization: Option<MetadataValue<Ascii>>,
    /// Runs the calls; the command line is otherwise synchronous.
    runtime: tokio::runtime::Runtime,
}

impl Remote {
    /// Connects to the hub at `url` (`http://` or `https://`, the latter checked against the
    /// CA in `ca_file`), to call it with the token in `token_file`.
    pub fn connect(url: &str, ca_file: Option<&Path>, token_file: Option<&Path>) -> Result<Remote> {
        let authorization = token_file.map(read_token).transpose()?;
        if authorization.is_some() && cyclerd_proto::in_clear_to_another_host(url) {
            eprintln!(
                "warning: {url} is plain http: the token crosses the network in clear; serve the \
                 hub with --tls-cert/--tls-key and use https://"
            );
        }
        let mut endpoint = Endpoint::from_shared(url.to_owned())
            .with_context(|| format!("--hub {url} is not a URL (http://HOST:PORT)"))?;
        match (url.split_once("://").map(|(s, _)| s), ca_file) {
            (Some("https"), Some(ca)) => {
                let pem = std::fs::read(ca)
                    .with_context(|| format!("cannot read the CA file {}", ca.display()))?;
                endpoint = endpoint
                    .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                    .with_context(|| format!("the CA file {} is unusable", ca.display()))?;
            }
            (Some("https"), None) => bail!(
                "--hub {url} needs --ca-file FILE: the lab CA (PEM) that signed the hub's \
                 certificate"
            ),
            (Some("http"), None) => {}
            (Some("http"), Some(_)) => bail!(
                "--ca-file is for a hub served over TLS: give its https:// address, not {url}"
            ),
            _ => bail!("--hub {url} must start with http:// or https://"),
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("cannot start the async runtime")?;
        let channel = runtime
            .block_on(
                endpoint
                    .connect_timeout(Duration::from_secs(10))
                    .tcp_nodelay(true)
                    .connect(),
            )
            .map_err(|e| {
                anyhow!(
                    "cannot reach the hub at {url}: {}",
                    cyclerd_proto::connect_failure(url, &e)
                )
            })?;
        Ok(Remote {
            url: url.to_owned(),
            client: QueryClient::new(channel).max_decoding_message_size(MAX_RESPONSE_SIZE),
            authorization,
            runtime,
        })
    }

    /// The hub's URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// `ListTests` with `filter`.
    pub fn list_tests(&mut self, filter: &TestFilter) -> Result<Vec<TestSummary>> {
        let request = self.request(ListTestsRequest {
            daemon_id: filter.daemon_id.clone(),
            cell_id: filter.cell_id.clone(),
            chemistry: filter.chemistry.clone(),
            state: filter.state.clone(),
            started_after_unix_s: filter.started_after_unix_s,
            started_before_unix_s: filter.started_before_unix_s,
            lab: filter.lab.clone(),
            team: filter.team.clone(),
            min_grade: filter.min_grade.clone(),
        });
        let answer = self.runtime.block_on(self.client.list_tests(request));
        Ok(answer
            .map_err(|s| refusal(&self.url, &s))?
            .into_inner()
            .tests)
    }

    /// `ListCells` of `lab` (empty: the token's lab, or every cell on a hub without tokens).
    pub fn list_cells(&mut self, lab: &str) -> Result<Vec<Cell>> {
        let request = self.request(ListCellsRequest {
            lab: lab.to_owned(),
        });
        let answer = self.runtime.block_on(self.client.list_cells(request));
        Ok(answer
            .map_err(|s| refusal(&self.url, &s))?
            .into_inner()
            .cells)
    }

    /// `GetTest` of `test_id`.
    pub fn get_test(&mut self, test_id: &str) -> Result<TestDetail> {
        let request = self.request(GetTestRequest {
            test_id: test_id.to_owned(),
        });
        let answer = self.runtime.block_on(self.client.get_test(request));
        Ok(answer.map_err(|s| refusal(&self.url, &s))?.into_inner())
    }

    /// The tiers `lab` has a metadata schema for (`GetMetadataSchemas`).
    pub fn metadata_schemas(&mut self, lab: &str) -> Result<Vec<String>> {
        let request = self.request(GetMetadataSchemasRequest {
            lab: lab.to_owned(),
        });
        let answer = self
            .runtime
            .block_on(self.client.get_metadata_schemas(request));
        Ok(answer
            .map_err(|s| refusal(&self.url, &s))?
            .into_inner()
            .schemas
            .into_iter()
            .map(|s| s.tier)
            .collect())
    }

    /// `ListCycles` of `test_id`.
    pub fn list_cycles(&mut self, test_id: &str) -> Result<ListCyclesResponse> {
        let request = self.request(ListCyclesRequest {
            test_id: test_id.to_owned(),
        });
        let answer = self.runtime.block_on(self.client.list_cycles(request));
        Ok(answer.map_err(|s| refusal(&self.url, &s))?.into_inner())
    }

    /// `ReadSamples` of `test_id`, handing each batch to `each` until it fails.
    pub fn read_samples(
        &mut self,
        test_id: &str,
        cols: &Columns,
        window: (f64, f64),
        each: impl FnMut(&SampleBatch) -> std::io::Result<()>,
    ) -> Result<()> {
        self.read_samples_with(test_id, cols, window, false, each)
    }

    /// [`Remote::read_samples`], with each sample's plan step when `plan_step` (for exports).
    pub fn read_samples_with(
        &mut self,
        test_id: &str,
        cols: &Columns,
        window: (f64, f64),
        plan_step: bool,
        each: impl FnMut(&SampleBatch) -> std::io::Result<()>,
    ) -> Result<()> {
        let request = self.request(ReadSamplesRequest {
            test_id: test_id.to_owned(),
            columns: cols.names().into_iter().map(String::from).collect(),
            from_test_time_s: window.0,
            to_test_time_s: window.1,
            with_plan_step: plan_step,
        });
        let mut client = self.client.clone();
        self.batches(async move { client.read_samples(request).await }, each)
    }

    /// `Tail` of `test_id` from its first sample: every sample the hub holds, then each new
    /// one as the hub stores it, handed to `each` batch by batch; returns when the test has
    /// ended and everything was sent.
    pub fn tail(
        &mut self,
        test_id: &str,
        each: impl FnMut(&SampleBatch) -> std::io::Result<()>,
    ) -> Result<()> {
        let request = self.request(TailRequest {
            test_id: test_id.to_owned(),
            from_seq: 0,
        });
        let mut client = self.client.clone();
        self.batches(async move { client.tail(request).await }, each)
    }

    /// Runs a call that answers with a stream of batches, handing each to `each`.
    fn batches(
        &self,
        call: impl Future<
            Output = Result<tonic::Response<tonic::Streaming<SampleBatch>>, tonic::Status>,
        >,
        mut each: impl FnMut(&SampleBatch) -> std::io::Result<()>,
    ) -> Result<()> {
        let url = &self.url;
        self.runtime.block_on(async move {
            let mut stream = call.await.map_err(|s| refusal(url, &s))?.into_inner();
            while let Some(batch) = stream.message().await.map_err(|s| refusal(url, &s))? {
                each(&batch)?;
            }
            Ok(())
        })
    }

    /// `message` with the token, if any.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(value) = &self.authorization {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        request
    }
}

/// `Bearer <token>` from a token file, refusing a file that holds no token.
pub(crate) fn read_token(file: &Path) -> Result<MetadataValue<Ascii>> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the token file {}", file.display()))?;
    let token = text.trim();
    if crate::token::parse(token).is_none() {
        bail!(
            "the token file {} does not hold a cyclerhub token (cyh_...); put in it what \
             `cyclerhub token issue` printed",
            file.display()
        );
    }
    cyclerd_proto::bearer(token).ok_or_else(|| anyhow!("a parsed token is ASCII"))
}

/// A status from the hub as one line for people: what kind of refusal, then the hub's words.
fn refusal(url: &str, status: &tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let what = match status.code() {
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "permission denied",
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid request",
        Code::Unavailable => "unavailable",
        _ => "failed",
    };
    anyhow!("hub {url}: {what}: {}", status.message())
}
