//! The on-disk form of one blob: a fixed-size header with its sha256 and size, then its bytes.
//!
//! Keeping the digest in the blob's own file (rather than a sidecar) means one rename replaces
//! bytes and digest together, and a reader that opened the file reads a header that matches the
//! bytes after it, even while the blob is being overwritten.

use sha2::{Digest, Sha256};

/// `DIEGO-BLOB-1\n` + 64 hex digits + `\n` + 20 decimal digits + `\n`.
const MAGIC: &[u8] = b"DIEGO-BLOB-1\n";
pub(crate) const HEADER_LEN: usize = MAGIC.len() + 64 + 1 + 20 + 1;

/// What a blob's header says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub sha256: String,
    pub size: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        let text = format!("{:0>64}\n{:020}\n", self.sha256, self.size);
        out[..MAGIC.len()].copy_from_slice(MAGIC);
        out[MAGIC.len()..].copy_from_slice(text.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, String> {
        let Some(rest) = bytes.strip_prefix(MAGIC) else {
            return Err("it does not start with the blob header".to_owned());
        };
        let text = std::str::from_utf8(rest).map_err(|_| "its header is not text".to_owned())?;
        let (sha256, size) = text
            .strip_suffix('\n')
            .and_then(|t| t.split_once('\n'))
            .ok_or_else(|| "its header is malformed".to_owned())?;
        if !is_sha256_hex(sha256) {
            return Err("its header has no valid sha256".to_owned());
        }
        let size = size
            .parse()
            .map_err(|_| "its header has no valid size".to_owned())?;
        Ok(Header {
            sha256: sha256.to_owned(),
            size,
        })
    }
}

/// 64 lowercase hex digits.
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The lowercase hex of a finished sha256.
pub(crate) fn hex_digest(hasher: Sha256) -> String {
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let header = Header {
            sha256: hex_digest(Sha256::new()),
            size: 12_345,
        };
        let bytes = header.encode();
        assert_eq!(Header::decode(&bytes).unwrap(), header);
        let mut broken = bytes;
        broken[0] = b'X';
        assert!(Header::decode(&broken).is_err());
    }
}
