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

#![forbid(unsafe_code)]

use super::rdb::{Reader, FOOTER};

const RDB_TYPE_STRING: u8 = 0;

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
