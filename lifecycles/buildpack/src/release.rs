//! The subset of `bin/release`'s YAML a launcher needs: `default_process_types`, a map of
//! process type to command, one `name: command` per indented line (plain, single- or
//! double-quoted scalars). Other keys (`addons`, `config_vars`) are ignored.

/// `(type, command)` pairs in the order written.
pub fn default_process_types(yaml: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut inside = false;
    for line in yaml.lines() {
        let trimmed = line.trim_end();
        if trimmed.trim_start().is_empty() || trimmed.trim_start().starts_with('#') {
            continue;
        }
        let indented = trimmed.starts_with(' ') || trimmed.starts_with('\t');
        if !indented {
            inside = false;
            if let Some(rest) = trimmed.strip_prefix("default_process_types:") {
                let rest = rest.trim();
                if let Some(flow) = rest.strip_prefix('{').and_then(|r| r.strip_suffix('}')) {
                    for item in flow.split(',') {
                        if let Some(pair) = pair(item) {
                            out.push(pair);
                        }
                    }
                } else {
                    inside = true;
                }
            }
            continue;
        }
        if inside && let Some(pair) = pair(trimmed) {
            out.push(pair);
        }
    }
    out
}

fn pair(item: &str) -> Option<(String, String)> {
    let (name, value) = item.split_once(':')?;
    let name = unquote(name.trim());
    if name.is_empty() {
        return None;
    }
    Some((name, unquote(value.trim())))
}

fn unquote(s: &str) -> String {
    if s.len() >= 2 && s.starts_with('"') && s.ends_with('"') {
        s[1..s.len() - 1]
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else if s.len() >= 2 && s.starts_with('\'') && s.ends_with('\'') {
        s[1..s.len() - 1].replace("''", "'")
    } else {
        s.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::default_process_types;

    #[test]
    fn reads_block_and_flow_maps() {
        let yaml = "---\naddons: []\nconfig_vars: {}\ndefault_process_types:\n  web: python3 app.py\n  worker: 'bash -c \"x: y\"'\n";
        assert_eq!(
            default_process_types(yaml),
            vec![
                ("web".to_owned(), "python3 app.py".to_owned()),
                ("worker".to_owned(), "bash -c \"x: y\"".to_owned()),
            ]
        );
        assert_eq!(
            default_process_types("default_process_types: {web: ./start}\n"),
            vec![("web".to_owned(), "./start".to_owned())]
        );
        assert!(default_process_types("addons: []\n").is_empty());
    }
}
