//! Blob keys: which names are allowed, so a key can never reach outside the store's directory.

use crate::error::BlobError;

/// The longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// The most `/`-separated segments in a key.
pub const MAX_SEGMENTS: usize = 8;

/// Checks a key such as `apps/<guid>/bits/<sha>.zip`: 1 to 8 segments of `[A-Za-z0-9._-]`,
/// none of them empty, `.` or `..`, at most 512 bytes in all.
pub fn validate_key(key: &str) -> Result<(), BlobError> {
    let invalid = |reason: String| BlobError::InvalidKey {
        key: key.to_owned(),
        reason,
    };
    if key.is_empty() {
        return Err(invalid("it is empty".to_owned()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid(format!("it is longer than {MAX_KEY_BYTES} bytes")));
    }
    let segments = key.split('/').count();
    if segments > MAX_SEGMENTS {
        return Err(invalid(format!(
            "it has {segments} segments, more than {MAX_SEGMENTS}"
        )));
    }
    key.split('/')
        .try_for_each(|s| check_segment(s).map_err(invalid))
}

/// Checks a listing prefix: the segments before its last `/` are whole key segments (and
/// checked as such); what follows is the start of a segment. The empty prefix is everything.
pub fn validate_prefix(prefix: &str) -> Result<(), BlobError> {
    let invalid = |reason: String| BlobError::InvalidKey {
        key: prefix.to_owned(),
        reason: format!("as a prefix, {reason}"),
    };
    if prefix.len() > MAX_KEY_BYTES {
        return Err(invalid(format!("it is longer than {MAX_KEY_BYTES} bytes")));
    }
    let (whole, partial) = prefix.rsplit_once('/').unwrap_or(("", prefix));
    if !whole.is_empty() || prefix.starts_with('/') {
        whole
            .split('/')
            .try_for_each(|s| check_segment(s).map_err(invalid))?;
    }
    if let Some(c) = partial.chars().find(|c| !allowed(*c)) {
        return Err(invalid(format!("it has the character {c:?}")));
    }
    Ok(())
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_segment(segment: &str) -> Result<(), String> {
    match segment {
        "" => Err("it has an empty segment".to_owned()),
        "." | ".." => Err(format!("it has a {segment:?} segment")),
        _ => match segment.chars().find(|c| !allowed(*c)) {
            Some(c) => Err(format!(
                "it has the character {c:?} (allowed: A-Z a-z 0-9 . _ -)"
            )),
            None => Ok(()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diego_keys_are_valid() {
        for key in [
            "apps/0b5e/bits/3f2a.zip",
            "droplets/0b5e.tgz",
            "buildpacks/python.zip",
            "lifecycles/ab12.wasm",
            ".hidden",
            "a/b/c/d/e/f/g/h",
        ] {
            assert!(validate_key(key).is_ok(), "{key}");
        }
    }

    #[test]
    fn escaping_and_odd_keys_are_invalid() {
        for key in [
            "",
            "../x",
            "a/../b",
            "./a",
            "a//b",
            "/a",
            "a/",
            "a b",
            "a\\b",
            "%2e%2e",
            "a/b/c/d/e/f/g/h/i",
            "é",
            &"x".repeat(513),
        ] {
            assert!(validate_key(key).is_err(), "{key}");
        }
    }

    #[test]
    fn prefixes() {
        for prefix in ["", "apps/", "apps/x/", "apps/x", "ap", "."] {
            assert!(validate_prefix(prefix).is_ok(), "{prefix}");
        }
        for prefix in ["../", "apps/../", "/", "a//", "a b", "apps/x/%"] {
            assert!(validate_prefix(prefix).is_err(), "{prefix}");
        }
    }
}
