//! Name rules: app and buildpack names become DNS labels (routes) and blob-store key segments.

/// The rule, as error messages state it.
pub const NAME_RULE: &str = "a name is 1 to 63 lowercase letters, digits and '-', \
     starting and ending with a letter or digit ([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)";

/// Whether `name` is a DNS label: `[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?`.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    let alnum = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            bytes.len() <= 63
                && alnum(first)
                && alnum(last)
                && bytes.iter().all(|b| alnum(b) || *b == b'-')
        }
        _ => false,
    }
}

/// Whether `host` is a route hostname: dot-separated DNS labels, at most 253 bytes.
pub fn is_hostname(host: &str) -> bool {
    !host.is_empty() && host.len() <= 253 && host.split('.').all(is_dns_label)
}

/// Whether `name` is an environment variable name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels() {
        for ok in ["a", "my-app", "a1", "0", &"x".repeat(63)] {
            assert!(is_dns_label(ok), "{ok}");
        }
        for bad in ["", "my app", "-a", "a-", "A", "a_b", "a.b", &"x".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad}");
        }
    }

    #[test]
    fn hostnames_and_env_names() {
        assert!(is_hostname("my-app.apps.internal"));
        assert!(!is_hostname("my app.x"));
        assert!(!is_hostname("a..b"));
        assert!(is_env_name("PORT_2") && is_env_name("_x"));
        assert!(!is_env_name("2X") && !is_env_name("A-B") && !is_env_name(""));
    }
}
