//! The value of a RESTORE payload that holds a string, decoded from the payload itself.
//!
//! Why: reading a restored string from the key would go through `StringDMA`, which turns
//! an int- or embstr-encoded value into a new raw object (its encoding, memory and LRU/LFU
//! change: visible in OBJECT ENCODING / IDLETIME / FREQ and MEMORY USAGE). The payload
//! RESTORE ran holds the same bytes: the server's DUMP format, `type | object | rdb
//! version (2 bytes) | crc64 (8 bytes)`, where a string object is one RDB string:
//! a length (6-bit, 14-bit, 32- or 64-bit big-endian), or an integer (8, 16, 32 bits,
//! little-endian, written back as its decimal text), or an LZF-compressed run
//! (compressed length, original length, data). Anything else is `None`: the caller reads
//! the key instead. The server has checked the crc before the command succeeded.
//! (LZF is decoded here: the crate for it is deprecated, and the format is 30 lines.)

#![forbid(unsafe_code)]

const RDB_TYPE_STRING: u8 = 0;
const RDB_ENC_INT8: u8 = 0;
const RDB_ENC_INT16: u8 = 1;
const RDB_ENC_INT32: u8 = 2;
const RDB_ENC_LZF: u8 = 3;
/// Version and crc64 after the object.
const FOOTER: usize = 10;

/// The string a RESTORE payload holds, if it holds one.
pub fn restored_string(payload: &[u8]) -> Option<Vec<u8>> {
    let body = payload.get(..payload.len().checked_sub(FOOTER)?)?;
    let (&ty, rest) = body.split_first()?;
    if ty != RDB_TYPE_STRING {
        return None;
    }
    let mut r = Reader { buf: rest };
    let value = r.string()?;
    r.buf.is_empty().then_some(value)
}

struct Reader<'a> {
    buf: &'a [u8],
}

enum Len {
    Plain(usize),
    Encoded(u8),
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Option<&[u8]> {
        if self.buf.len() < n {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }

    fn len(&mut self) -> Option<Len> {
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

    fn plain_len(&mut self) -> Option<usize> {
        match self.len()? {
            Len::Plain(n) => Some(n),
            Len::Encoded(_) => None,
        }
    }

    fn string(&mut self) -> Option<Vec<u8>> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(object: &[u8]) -> Vec<u8> {
        let mut p = vec![RDB_TYPE_STRING];
        p.extend_from_slice(object);
        p.extend_from_slice(&[10, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        p
    }

    #[test]
    fn plain_int_and_lzf_strings() {
        assert_eq!(
            restored_string(&payload(b"\x05hello")),
            Some(b"hello".to_vec())
        );
        assert_eq!(
            restored_string(&payload(&[0xc0, 0xf6])),
            Some(b"-10".to_vec())
        );
        assert_eq!(
            restored_string(&payload(&[0xc1, 0x39, 0x30])),
            Some(b"12345".to_vec())
        );
        assert_eq!(
            restored_string(&payload(&[0xc2, 0x40, 0xe2, 0x01, 0x00])),
            Some(b"123456".to_vec())
        );
        // "aaaa...a" (40 bytes): a literal 'a', then a back reference of 39 bytes, 1 back.
        let lzf = [0xc3, 0x05, 0x28, 0x00, b'a', 0xe0, 0x1e, 0x00];
        assert_eq!(restored_string(&payload(&lzf)), Some(vec![b'a'; 40]));
        let mut long = vec![0x40, 0x64];
        long.extend(std::iter::repeat_n(b'z', 100));
        assert_eq!(restored_string(&payload(&long)), Some(vec![b'z'; 100]));
    }

    #[test]
    fn anything_else_is_none() {
        assert_eq!(restored_string(&[]), None);
        assert_eq!(
            restored_string(&[4, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]),
            None
        );
        assert_eq!(restored_string(&payload(b"\x05hel")), None, "short");
        assert_eq!(
            restored_string(&payload(b"\x02hello")),
            None,
            "trailing bytes"
        );
        assert_eq!(
            restored_string(&payload(&[0xc3, 0x02, 0x05, 0x00, b'a'])),
            None
        );
    }
}
