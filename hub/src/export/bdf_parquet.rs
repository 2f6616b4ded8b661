//! BDF as Parquet, with the `parquet` crate's low-level column writer (no arrow).

use std::io::Write;
use std::sync::Arc;

use parquet::basic::{Compression, Repetition, Type as PhysicalType};
use parquet::data_type::{DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use super::{Column, ExportError, Temperatures, ValueType, Written};
use crate::store::{HubStore, SampleRow};

/// Samples per row group: bounds the memory an export buffers (about 12 MB for 12 columns)
/// while keeping row groups large enough for readers to scan efficiently.
const ROW_GROUP_ROWS: usize = 1 << 17;

/// One column's values for the row group being filled, in the Parquet type it is written as.
enum Buffer {
    /// A required `DOUBLE`.
    Double(Vec<f64>),
    /// A required `INT64`.
    Int64(Vec<i64>),
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
            (ValueType::Float64, false) => Buffer::Double(Vec::with_capacity(ROW_GROUP_ROWS)),
            (ValueType::Float64, true) => Buffer::Nullable {
                values: Vec::with_capacity(ROW_GROUP_ROWS),
                defined: Vec::with_capacity(ROW_GROUP_ROWS),
            },
            (ValueType::DateTime, _) => unreachable!("BDF has no date-time column"),
        }
    }

    /// How the column is declared in the file's schema.
    fn parquet_type(&self) -> (PhysicalType, Repetition) {
        match self {
            Buffer::Double(_) => (PhysicalType::DOUBLE, Repetition::REQUIRED),
            Buffer::Int64(_) => (PhysicalType::INT64, Repetition::REQUIRED),
            Buffer::Nullable { .. } => (PhysicalType::DOUBLE, Repetition::OPTIONAL),
        }
    }

    fn clear(&mut self) {
        match self {
            Buffer::Double(v) => v.clear(),
            Buffer::Int64(v) => v.clear(),
            Buffer::Nullable { values, defined } => {
                values.clear();
                defined.clear();
            }
        }
    }
}

fn schema(columns: &[Column], buffers: &[Buffer]) -> Result<Type, ExportError> {
    let fields = columns
        .iter()
        .zip(buffers)
        .map(|(c, buffer)| {
            let (physical, repetition) = buffer.parquet_type();
            Ok(Arc::new(
                Type::primitive_type_builder(c.name, physical)
                    .with_repetition(repetition)
                    .build()?,
            ))
        })
        .collect::<Result<Vec<_>, ExportError>>()?;
    Ok(Type::group_type_builder("bdf")
        .with_fields(fields)
        .build()?)
}

/// Writes every sample of `test_id` as BDF Parquet to `writer`: the CSV's columns and values,
/// `DOUBLE` for times and values, `INT64` for the cycle and step counts, optional `DOUBLE` for
/// the temperature columns (null where a sample has no reading), Snappy-compressed, in row
/// groups of up to 131 072 samples.
pub fn write_bdf_parquet(
    store: &HubStore,
    test_id: &str,
    writer: impl Write + Send,
) -> Result<Written, ExportError> {
    let temperatures = Temperatures::of(store, test_id)?;
    let columns = temperatures.bdf_columns();
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(format!(
            "cyclerhub {} (parquet-rs)",
            env!("CARGO_PKG_VERSION")
        ))
        .build();
    let mut buffers: Vec<Buffer> = columns.iter().map(Buffer::for_column).collect();
    let schema = Arc::new(schema(&columns, &buffers)?);
    let mut file = SerializedFileWriter::new(writer, schema, Arc::new(properties))?;
    let mut buffered = 0;

    let rows = store.for_each_sample(test_id, |s: &SampleRow| -> Result<(), ExportError> {
        push(&mut buffers, s, temperatures);
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

/// Appends one sample to the buffers, which are in [`Temperatures::bdf_columns`] order.
fn push(buffers: &mut [Buffer], s: &SampleRow, temperatures: Temperatures) {
    let doubles = [
        s.test_time_s,
        s.voltage_v,
        s.current_a,
        s.unix_time_s,
        s.charge_capacity_ah,
        s.discharge_capacity_ah,
        s.charge_energy_wh,
        s.discharge_energy_wh,
    ];
    let counts = [i64::from(s.cycle), i64::from(s.step)];
    let (mut doubles, mut counts) = (doubles.into_iter(), counts.into_iter());
    let mut temperatures = temperatures.values(s);
    for buffer in buffers {
        match buffer {
            Buffer::Double(v) => v.push(doubles.next().expect("8 value columns")),
            Buffer::Int64(v) => v.push(counts.next().expect("2 count columns")),
            Buffer::Nullable { values, defined } => {
                match temperatures.next().expect("one per temperature column") {
                    Some(t) => {
                        values.push(t);
                        defined.push(1);
                    }
                    None => defined.push(0),
                }
            }
        }
    }
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
