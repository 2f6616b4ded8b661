//! Samples as an Arrow IPC stream (`application/vnd.apache.arrow.stream`): the schema message,
//! then a record batch per page the read hands over, so a reader (`pyarrow.ipc.open_stream`,
//! polars' `read_ipc_stream`) can start on the first page while the rest is on its way. The
//! columns are those of the Parquet download: `seq` (`Int64`), the selected columns as `Float64`
//! (cycle and step `Int64`; temperatures nullable, null where a sample has none).

use std::io::Write;
use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, Int64Array, RecordBatch};
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};
use cyclerd_proto::ingest::SampleBatch;

use crate::query::{Column, Columns, column};

/// Whether a column may be missing in a sample (a temperature).
fn optional(name: &str) -> bool {
    name.ends_with("temperature_c")
}

/// The encoder: a stream writer over `W` and the column names after `seq`.
pub struct ArrowSamples<W: Write> {
    /// The IPC stream being written.
    writer: StreamWriter<W>,
    /// The schema every batch carries.
    schema: SchemaRef,
    /// Column names after `seq`, in file order.
    names: Vec<&'static str>,
}

impl<W: Write> ArrowSamples<W> {
    /// Writes the schema message for `columns`.
    pub fn new(columns: &Columns, out: W) -> Result<ArrowSamples<W>, ArrowError> {
        let names = columns.names();
        let mut fields = vec![Field::new("seq", DataType::Int64, false)];
        for name in &names {
            fields.push(match *name {
                "cycle" | "step" => Field::new(*name, DataType::Int64, false),
                n if optional(n) => Field::new(n, DataType::Float64, true),
                n => Field::new(n, DataType::Float64, false),
            });
        }
        let schema: SchemaRef = Arc::new(Schema::new(fields));
        Ok(ArrowSamples {
            writer: StreamWriter::try_new(out, &schema)?,
            schema,
            names,
        })
    }

    /// Writes `b` as one record batch. A short column (a broken peer's) is padded, so every
    /// column has as many rows as the first.
    pub fn batch(&mut self, b: &SampleBatch) -> std::io::Result<()> {
        let n = self
            .names
            .first()
            .map_or(b.test_time_s.len(), |c| column(b, c).len());
        let mut arrays: Vec<ArrayRef> = Vec::with_capacity(self.names.len() + 1);
        arrays.push(Arc::new(Int64Array::from_iter_values(
            (0..n).map(|i| b.first_seq.saturating_add(i as u64) as i64),
        )));
        for name in &self.names {
            let array: ArrayRef = match column(b, name) {
                Column::Count(c) => Arc::new(Int64Array::from_iter_values(
                    (0..n).map(|i| c.get(i).copied().map_or(0, i64::from)),
                )),
                Column::Real(c) if optional(name) => Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| c.get(i).copied().filter(|x| !x.is_nan())),
                )),
                Column::Real(c) => Arc::new(Float64Array::from_iter_values(
                    (0..n).map(|i| c.get(i).copied().unwrap_or(f64::NAN)),
                )),
            };
            arrays.push(array);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), arrays).map_err(io)?;
        self.writer.write(&batch).map_err(io)
    }

    /// Writes the end-of-stream marker and flushes.
    pub fn finish(mut self) -> std::io::Result<()> {
        self.writer.finish().map_err(io)?;
        self.writer.get_mut().flush()
    }
}

fn io(e: ArrowError) -> std::io::Error {
    match e {
        ArrowError::IoError(_, e) => e,
        e => std::io::Error::other(e),
    }
}
