//! BDF as Parquet, with the `parquet` crate's low-level column writer (no arrow); also the
//! small per-cycle table beside it ([`write_table`]).

use std::io::Write;
use std::sync::Arc;

use cyclerd_protocols::bdf::Value;
use parquet::basic::{Compression, LogicalType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::{
    Column, ExportError, Source, Stored, Temperatures, ValueType, Written, for_each_bdf_row,
};
use crate::store::HubStore;

/// Samples per row group: bounds the memory an export buffers (about 25 MB for 20 columns)
/// while keeping row groups large enough for readers to scan efficiently.
const ROW_GROUP_ROWS: usize = 1 << 17;

/// One column's values for the row group being filled, in the Parquet type it is written as.
enum Buffer {
    /// A required `DOUBLE`.
    Double(Vec<f64>),
    /// A required `INT64`.
    Int64(Vec<i64>),
    /// A required UTF-8 `BYTE_ARRAY` (the step type).
    Text(Vec<ByteArray>),
    /// An optional `DOUBLE`: the present values only, and per row 1 (present) or 0 (null).
    Nullable {
        /// The values of the rows that have one.
        values: Vec<f64>,
        /// Parquet definition levels, one per row.
        defined: Vec<i16>,
    },
}

impl Buffer {
    fn for_column(c: &Column) -> Buffer {
        match (c.value_type, c.nullable) {
            (ValueType::Int64, _) => Buffer::Int64(Vec::with_capacity(ROW_GROUP_ROWS)),
            (ValueType::Text, _) => Buffer::Text(Vec::with_capacity(ROW_GROUP_ROWS)),
            (ValueType::Float64, false) => Buffer::Double(Vec::with_capacity(ROW_GROUP_ROWS)),
            (ValueType::Float64, true) => Buffer::Nullable {
                values: Vec::with_capacity(ROW_GROUP_ROWS),
                defined: Vec::with_capacity(ROW_GROUP_ROWS),
            },
            (ValueType::DateTime, _) => unreachable!("BDF has no date-time column"),
        }
    }

    /// How the column is declared in the file's schema.
    fn parquet_type(&self) -> (PhysicalType, Repetition, Option<LogicalType>) {
        match self {
            Buffer::Double(_) => (PhysicalType::DOUBLE, Repetition::REQUIRED, None),
            Buffer::Int64(_) => (PhysicalType::INT64, Repetition::REQUIRED, None),
            Buffer::Text(_) => (
                PhysicalType::BYTE_ARRAY,
                Repetition::REQUIRED,
                Some(LogicalType::String),
            ),
            Buffer::Nullable { .. } => (PhysicalType::DOUBLE, Repetition::OPTIONAL, None),
        }
    }

    /// Appends the row's value for this column.
    fn push(&mut self, value: Value) {
        match (self, value) {
            (Buffer::Double(v), Value::Double(x)) => v.push(x),
            (Buffer::Int64(v), Value::Int64(n)) => v.push(n),
            (Buffer::Text(v), Value::Text(s)) => v.push(ByteArray::from(s)),
            (Buffer::Nullable { values, defined }, Value::Double(x)) => {
                values.push(x);
                defined.push(1);
            }
            (Buffer::Nullable { defined, .. }, Value::Null) => defined.push(0),
            (_, value) => unreachable!("a row gives {value:?} for another column kind"),
        }
    }

    fn clear(&mut self) {
        match self {
            Buffer::Double(v) => v.clear(),
            Buffer::Int64(v) => v.clear(),
            Buffer::Text(v) => v.clear(),
            Buffer::Nullable { values, defined } => {
                values.clear();
                defined.clear();
            }
        }
    }
}

fn schema(name: &str, columns: &[Column], buffers: &[Buffer]) -> Result<Type, ExportError> {
    let fields = columns
        .iter()
        .zip(buffers)
        .map(|(c, buffer)| {
            let (physical, repetition, logical) = buffer.parquet_type();
            Ok(Arc::new(
                Type::primitive_type_builder(c.name, physical)
                    .with_repetition(repetition)
                    .with_logical_type(logical)
                    .build()?,
            ))
        })
        .collect::<Result<Vec<_>, ExportError>>()?;
    Ok(Type::group_type_builder(name).with_fields(fields).build()?)
}

/// Writes every sample of `test_id` as BDF Parquet to `writer`: the CSV's columns and values,
/// `DOUBLE` for times and measured or derived values, `INT64` for the cycle and step counts and
/// the record index, UTF-8 `BYTE_ARRAY` for the step type, optional `DOUBLE` for the
/// temperature columns (null where a sample has no reading), Snappy-compressed, in row groups of
/// up to 131 072 samples.
pub fn write_bdf_parquet(
    store: &HubStore,
    test_id: &str,
    writer: impl Write + Send,
) -> Result<Written, ExportError> {
    bdf_parquet(&mut Stored { store, test_id }, writer)
}

/// [`write_bdf_parquet`] of the test `source` reads.
pub(super) fn bdf_parquet(
    source: &mut impl Source,
    writer: impl Write + Send,
) -> Result<Written, ExportError> {
    let temperatures = Temperatures::of(source)?;
    let columns = temperatures.bdf_columns();
    let properties = properties();
    let mut buffers: Vec<Buffer> = columns.iter().map(Buffer::for_column).collect();
    let schema = Arc::new(schema("bdf", &columns, &buffers)?);
    let mut file = SerializedFileWriter::new(writer, schema, Arc::new(properties))?;
    let mut buffered = 0;

    let Temperatures { cell, ambient } = temperatures;
    let rows = for_each_bdf_row(source, |row| {
        for (buffer, value) in buffers.iter_mut().zip(row.values(cell, ambient)) {
            buffer.push(value);
        }
        buffered += 1;
        if buffered == ROW_GROUP_ROWS {
            write_row_group(&mut file, &mut buffers)?;
            buffered = 0;
        }
        Ok(())
    })?;
    if buffered > 0 {
        write_row_group(&mut file, &mut buffers)?;
    }
    file.close()?;
    Ok(Written { rows, columns })
}

/// How every Parquet file of an export is written: Snappy, naming its writer.
fn properties() -> WriterProperties {
    WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!(
            "cyclerhub {} (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ))
        .build()
}

/// Writes a small table (one row group) of `columns` to `writer`, the schema named `name`:
/// each row gives its values in column order, as BDF rows do. Returns the number of rows.
pub(super) fn write_table(
    writer: impl Write + Send,
    name: &str,
    columns: &[Column],
    rows: impl IntoIterator<Item = Vec<Value>>,
) -> Result<u64, ExportError> {
    let mut buffers: Vec<Buffer> = columns.iter().map(Buffer::for_column).collect();
    let schema = Arc::new(schema(name, columns, &buffers)?);
    let mut file = SerializedFileWriter::new(writer, schema, Arc::new(properties()))?;
    let mut n = 0;
    for row in rows {
        for (buffer, value) in buffers.iter_mut().zip(row) {
            buffer.push(value);
        }
        n += 1;
    }
    if n > 0 {
        write_row_group(&mut file, &mut buffers)?;
    }
    file.close()?;
    Ok(n)
}

fn write_row_group<W: Write + Send>(
    file: &mut SerializedFileWriter<W>,
    buffers: &mut [Buffer],
) -> Result<(), ExportError> {
    let mut group = file.next_row_group()?;
    for buffer in buffers.iter_mut() {
        let mut column = group
            .next_column()?
            .expect("the schema has one column per buffer");
        match buffer {
            Buffer::Double(v) => {
                column.typed::<DoubleType>().write_batch(v, None, None)?;
            }
            Buffer::Int64(v) => {
                column.typed::<Int64Type>().write_batch(v, None, None)?;
            }
            Buffer::Text(v) => {
                column.typed::<ByteArrayType>().write_batch(v, None, None)?;
            }
            Buffer::Nullable { values, defined } => {
                column
                    .typed::<DoubleType>()
                    .write_batch(values, Some(defined), None)?;
            }
        }
        column.close()?;
        buffer.clear();
    }
    group.close()?;
    Ok(())
}
