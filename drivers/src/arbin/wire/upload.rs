//! UPLOAD (file port): a file in packages, its feedback, and the MD5 both sides check.

use super::{Frame, MD5_HEX_LEN, PATH_CHARS, WireError, Writer, cmd, feedback_code, reader};

/// UPLOAD (file port): one package of a file; a file of n packages is sent as n frames with
/// indices 0..n, each with the whole file's length and MD5.
#[derive(Debug, Clone, PartialEq)]
pub struct Upload {
    /// Where MITS stores the file; a bare name lands in its schedule folder.
    pub path: String,
    /// The whole file's length.
    pub file_len: u64,
    pub package_count: u32,
    /// From 0.
    pub package_index: u32,
    /// Echoed in the feedback; its meaning is not public (cyclerd sends 0).
    pub time: f64,
    /// The whole file's MD5, as 32 lower-case hex characters.
    pub md5: String,
    /// This package's bytes.
    pub data: Vec<u8>,
}

impl Upload {
    const FIXED: usize = 2 * PATH_CHARS + 8 + 4 + 4 + 8 + MD5_HEX_LEN;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .wide(&self.path, PATH_CHARS)
            .bytes(&self.file_len.to_le_bytes())
            .bytes(&self.package_count.to_le_bytes())
            .bytes(&self.package_index.to_le_bytes())
            .bytes(&self.time.to_le_bytes())
            .ascii(&self.md5, MD5_HEX_LEN)
            .bytes(&self.data)
            .frame(cmd::UPLOAD)
    }

    pub fn from_frame(frame: &Frame) -> Result<Upload, WireError> {
        let mut r = reader("UPLOAD", frame, cmd::UPLOAD, Self::FIXED)?;
        let path = r.wide(PATH_CHARS)?;
        let file_len = r.u64()?;
        let package_count = r.u32()?;
        let package_index = r.u32()?;
        let time = r.f64()?;
        let md5 = r.ascii(MD5_HEX_LEN)?;
        let data = r.take(r.remaining())?.to_vec();
        Ok(Upload {
            path,
            file_len,
            package_count,
            package_index,
            time,
            md5,
            data,
        })
    }

    /// `data` cut into UPLOAD frames of at most `package_len` bytes each (one empty package
    /// for an empty file).
    pub fn packages(path: &str, data: &[u8], package_len: usize) -> Vec<Upload> {
        let md5 = md5_hex(data);
        let chunks: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(package_len.max(1)).collect()
        };
        let count = chunks.len() as u32;
        chunks
            .into_iter()
            .enumerate()
            .map(|(i, chunk)| Upload {
                path: path.to_string(),
                file_len: data.len() as u64,
                package_count: count,
                package_index: i as u32,
                time: 0.0,
                md5: md5.clone(),
                data: chunk.to_vec(),
            })
            .collect()
    }
}

/// The UPLOAD feedback, one per package.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UploadFeedback {
    /// See [`upload_result`](super::upload_result).
    pub result: u32,
    pub time: f64,
    pub package_count: u32,
    pub package_index: u32,
}

impl UploadFeedback {
    const LEN: usize = 20;

    pub fn to_frame(&self) -> Frame {
        Writer::default()
            .bytes(&self.result.to_le_bytes())
            .bytes(&self.time.to_le_bytes())
            .bytes(&self.package_count.to_le_bytes())
            .bytes(&self.package_index.to_le_bytes())
            .frame(feedback_code(cmd::UPLOAD))
    }

    pub fn from_frame(frame: &Frame) -> Result<UploadFeedback, WireError> {
        let mut r = reader(
            "UPLOAD feedback",
            frame,
            feedback_code(cmd::UPLOAD),
            Self::LEN,
        )?;
        Ok(UploadFeedback {
            result: r.u32()?,
            time: r.f64()?,
            package_count: r.u32()?,
            package_index: r.u32()?,
        })
    }
}

/// MD5 (RFC 1321) of `data`, the integrity check of an upload.
pub fn md5(data: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    // K[i] = floor(2^32 * |sin(i + 1)|), as the RFC tabulates it.
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32);
    let mut h: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut msg = data.to_vec();
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&((data.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in msg.chunks_exact(64) {
        let m: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes([
                block[4 * i],
                block[4 * i + 1],
                block[4 * i + 2],
                block[4 * i + 3],
            ])
        });
        let [mut a, mut b, mut c, mut d] = h;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let f = f.wrapping_add(a).wrapping_add(k[i]).wrapping_add(m[g]);
            a = d;
            d = c;
            c = b;
            b = b.wrapping_add(f.rotate_left(S[i]));
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 16];
    for (i, word) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&word.to_le_bytes());
    }
    out
}

/// [`md5`] as lower-case hex.
pub fn md5_hex(data: &[u8]) -> String {
    md5(data).iter().map(|b| format!("{b:02x}")).collect()
}
