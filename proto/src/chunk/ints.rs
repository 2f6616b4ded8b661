//! Integer columns of a chunk (zigzag LEB128 varints of values, deltas or deltas of deltas),
//! and the reader every column decodes from.

use super::ChunkError;

pub(super) fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub(super) fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes of a varint by the leading zeros of its value (a table: this is the encoder's
/// hottest loop).
const VARINT_LEN: [u8; 65] = {
    let mut t = [0u8; 65];
    let mut lz = 0;
    while lz <= 64 {
        let bits = 64 - lz;
        t[lz] = if bits == 0 { 1 } else { bits.div_ceil(7) as u8 };
        lz += 1;
    }
    t
};

/// Bytes of `v` as a zigzag varint.
fn varint_len(v: i64) -> usize {
    usize::from(VARINT_LEN[zigzag(v).leading_zeros() as usize])
}

/// The order an integer column is written in (see the module doc), and its size in bytes.
pub(super) fn int_plan(v: &[i64]) -> (u8, usize) {
    let (mut size1, mut size2) = (0usize, 0usize);
    let mut constant = true;
    // The first delta stands for itself in order 2 too: as if the delta before it were 0.
    let mut prev_d = 0i64;
    for w in v.windows(2) {
        let d = w[1].wrapping_sub(w[0]);
        constant &= d == 0;
        size1 += varint_len(d);
        size2 += varint_len(d.wrapping_sub(prev_d));
        prev_d = d;
    }
    let head = 1 + v.first().map_or(0, |&f| varint_len(f));
    if constant {
        (0, head)
    } else if size2 < size1 {
        (2, head + size2)
    } else {
        (1, head + size1)
    }
}

/// An integer column (see the module doc), order chosen by size.
pub(super) fn put_ints(out: &mut Vec<u8>, v: &[i64]) {
    put_ints_as(out, v, int_plan(v).0);
}

/// An integer column in `order`, which [`int_plan`] chose for `v`.
pub(super) fn put_ints_as(out: &mut Vec<u8>, v: &[i64], order: u8) {
    let Some(&first) = v.first() else {
        out.push(0);
        return;
    };
    out.push(order);
    put_varint(out, zigzag(first));
    if order == 0 {
        return;
    }
    let mut prev_d = 0i64;
    for i in 1..v.len() {
        let d = v[i].wrapping_sub(v[i - 1]);
        let x = if order == 2 && i > 1 {
            d.wrapping_sub(prev_d)
        } else {
            d
        };
        put_varint(out, zigzag(x));
        prev_d = d;
    }
}

/// Bytes being decoded, consumed from the front.
pub(crate) struct Reader<'a> {
    pub(crate) buf: &'a [u8],
}

impl Reader<'_> {
    pub(crate) fn byte(&mut self) -> Result<u8, ChunkError> {
        let (&b, rest) = self.buf.split_first().ok_or("chunk ends early")?;
        self.buf = rest;
        Ok(b)
    }

    pub(crate) fn varint(&mut self) -> Result<u64, ChunkError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint longer than 10 bytes in chunk".into())
    }

    /// `n` raw bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Result<&[u8], ChunkError> {
        if self.buf.len() < n {
            return Err("chunk ends early".into());
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    pub(super) fn take<const N: usize>(&mut self) -> Result<[u8; N], ChunkError> {
        Ok(self.bytes(N)?.try_into().expect("N bytes"))
    }

    /// An integer column of `n` values into `out` (cleared first).
    pub(super) fn ints(&mut self, n: usize, out: &mut Vec<i64>) -> Result<(), ChunkError> {
        out.clear();
        let order = self.byte()?;
        if order > 2 {
            return Err(format!("integer column order {order} is unknown").into());
        }
        if n == 0 {
            return Ok(());
        }
        let first = unzigzag(self.varint()?);
        out.reserve(n);
        out.push(first);
        if order == 0 {
            out.resize(n, first);
            return Ok(());
        }
        let (mut prev, mut d) = (first, 0i64);
        for i in 1..n {
            let x = unzigzag(self.varint()?);
            d = if order == 2 && i > 1 {
                d.wrapping_add(x)
            } else {
                x
            };
            prev = prev.wrapping_add(d);
            out.push(prev);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_lengths_are_the_bytes_put_varint_writes() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            8191,
            8192,
            i64::MAX,
            i64::MIN,
            1 << 40,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, zigzag(v));
            assert_eq!(varint_len(v), out.len(), "{v}");
        }
    }
}
