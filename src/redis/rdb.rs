//! The server's DUMP format, as far as the module reads and writes it: `type | object |
//! rdb version (2 bytes, little-endian) | crc64 (8 bytes, little-endian, Jones polynomial,
//! over everything before it)`. Inside the object: lengths (6-bit, 14-bit, 32- or 64-bit
//! big-endian), strings (a length and bytes, an 8/16/32-bit little-endian integer written
//! back as its decimal text, or an LZF-compressed run: compressed length, original length,
//! data), and millisecond times (8 bytes, little-endian).
//!
//! The reader never panics on a short or malformed payload: every read is `None` then.
//! The writer emits only plain forms (no integer or LZF encoding), which the server loads.
//! (LZF is decoded here: the crate for it is deprecated, and the format is 30 lines.)

#![forbid(unsafe_code)]

const RDB_ENC_INT8: u8 = 0;
const RDB_ENC_INT16: u8 = 1;
const RDB_ENC_INT32: u8 = 2;
const RDB_ENC_LZF: u8 = 3;
/// Version and crc64 after the object.
pub const FOOTER: usize = 10;

const CRC64: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_REDIS);

/// The payload's type byte, object and rdb version, if its crc64 is right.
pub fn open_payload(payload: &[u8]) -> Option<(u8, &[u8], [u8; 2])> {
    let body_len = payload.len().checked_sub(FOOTER)?;
    let (body, footer) = payload.split_at(body_len);
    let (version, crc) = footer.split_at(2);
    let crc = u64::from_le_bytes(crc.try_into().ok()?);
    let checked = CRC64.checksum(&payload[..body_len + 2]);
    if crc != checked {
        return None;
    }
    let (&ty, object) = body.split_first()?;
    Some((ty, object, [version[0], version[1]]))
}

/// A payload from its type byte, object and rdb version, with its crc64.
pub fn seal_payload(ty: u8, object: &[u8], version: [u8; 2]) -> Vec<u8> {
    let mut p = Vec::with_capacity(object.len() + 1 + FOOTER);
    p.push(ty);
    p.extend_from_slice(object);
    p.extend_from_slice(&version);
    let crc = CRC64.checksum(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

pub struct Reader<'a> {
    pub buf: &'a [u8],
}

pub enum Len {
    Plain(usize),
    Encoded(u8),
}

impl<'a> Reader<'a> {
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    pub fn len(&mut self) -> Option<Len> {
        let first = *self.take(1)?.first()?;
        Some(match first >> 6 {
            0 => Len::Plain(usize::from(first & 0x3f)),
            1 => {
                Len::Plain((usize::from(first & 0x3f) << 8) | usize::from(*self.take(1)?.first()?))
            }
            3 => Len::Encoded(first & 0x3f),
            _ => match first {
                0x80 => Len::Plain(u32::from_be_bytes(self.take(4)?.try_into().ok()?) as usize),
                0x81 => Len::Plain(
                    usize::try_from(u64::from_be_bytes(self.take(8)?.try_into().ok()?)).ok()?,
                ),
                _ => return None,
            },
        })
    }

    pub fn plain_len(&mut self) -> Option<usize> {
        match self.len()? {
            Len::Plain(n) => Some(n),
            Len::Encoded(_) => None,
        }
    }

    /// A length read as a number (ids, counters).
    pub fn number(&mut self) -> Option<u64> {
        self.plain_len().map(|n| n as u64)
    }

    /// A millisecond time: 8 bytes, little-endian.
    pub fn ms_time(&mut self) -> Option<i64> {
        Some(i64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }

    pub fn string(&mut self) -> Option<Vec<u8>> {
        match self.len()? {
            Len::Plain(n) => Some(self.take(n)?.to_vec()),
            Len::Encoded(RDB_ENC_INT8) => Some((self.take(1)?[0] as i8).to_string().into_bytes()),
            Len::Encoded(RDB_ENC_INT16) => {
                let v = i16::from_le_bytes(self.take(2)?.try_into().ok()?);
                Some(v.to_string().into_bytes())
            }
            Len::Encoded(RDB_ENC_INT32) => {
                let v = i32::from_le_bytes(self.take(4)?.try_into().ok()?);
                Some(v.to_string().into_bytes())
            }
            Len::Encoded(RDB_ENC_LZF) => {
                let compressed = self.plain_len()?;
                let len = self.plain_len()?;
                lzf_decompress(self.take(compressed)?, len)
            }
            Len::Encoded(_) => None,
        }
    }
}

/// Writes a length in its shortest form.
pub fn put_len(out: &mut Vec<u8>, n: u64) {
    if n < 1 << 6 {
        out.push(n as u8);
    } else if n < 1 << 14 {
        out.push(0x40 | (n >> 8) as u8);
        out.push(n as u8);
    } else if n <= u64::from(u32::MAX) {
        out.push(0x80);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    } else {
        out.push(0x81);
        out.extend_from_slice(&n.to_be_bytes());
    }
}

/// Writes a string as a plain length and its bytes.
pub fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_len(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// LZF (liblzf's format, as Redis uses it): literal runs and back references.
fn lzf_decompress(input: &[u8], len: usize) -> Option<Vec<u8>> {
    let mut out: Vec<u8> = Vec::with_capacity(len);
    let mut i = 0;
    while i < input.len() {
        let ctrl = usize::from(input[i]);
        i += 1;
        if ctrl < 32 {
            let run = input.get(i..i + ctrl + 1)?;
            out.extend_from_slice(run);
            i += ctrl + 1;
        } else {
            let mut n = ctrl >> 5;
            if n == 7 {
                n += usize::from(*input.get(i)?);
                i += 1;
            }
            let back = ((ctrl & 0x1f) << 8) + usize::from(*input.get(i)?) + 1;
            i += 1;
            let from = out.len().checked_sub(back)?;
            // The reference may overlap what it produces: copy byte by byte.
            for k in 0..n + 2 {
                let b = out[from + k];
                out.push(b);
            }
        }
        if out.len() > len {
            return None;
        }
    }
    (out.len() == len).then_some(out)
}
