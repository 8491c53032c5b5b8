//! Reading a role's `/metrics` as Prometheus would: the text is parsed by the official Python
//! client's parser (`prometheus_client.parser`, from PyPI; `scripts/setup.sh` installs it), so a
//! scrape that parses here parses for a real Prometheus too.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::Context;

use crate::Result;

/// Parses stdin with `prometheus_client`'s text parser; prints one JSON sample per line.
const PARSER: &str = r#"
import json, math, sys
from prometheus_client.parser import text_string_to_metric_families
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        value = s.value if math.isfinite(s.value) else None
        print(json.dumps({"family": family.name, "type": family.type, "name": s.name,
                          "labels": s.labels, "value": value}))
"#;

/// One sample of a scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// The family's name (for a histogram, without `_bucket`/`_sum`/`_count`).
    pub family: String,
    /// `counter`, `gauge`, `histogram`, ...
    pub kind: String,
    /// The sample's own name (`RequestLatency_bucket`, ...).
    pub name: String,
    pub labels: BTreeMap<String, String>,
    /// `None` for NaN and infinities.
    pub value: Option<f64>,
}

/// A parsed scrape.
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    pub samples: Vec<Sample>,
}

impl Scrape {
    /// Parses Prometheus text-format `text`; an error if the parser refuses it.
    pub fn parse(text: &str) -> Result<Scrape> {
        let mut python = Command::new("python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run python3 to parse a scrape (scripts/setup.sh installs it)")?;
        python
            .stdin
            .take()
            .context("no stdin for python3")?
            .write_all(text.as_bytes())
            .context("cannot hand the scrape to python3")?;
        let out = python
            .wait_with_output()
            .context("python3 did not finish")?;
        anyhow::ensure!(
            out.status.success(),
            "the Prometheus parser refused the scrape (or prometheus_client is missing: \
             `python3 -m pip install prometheus-client`, as scripts/setup.sh does): {}\n---- scrape ----\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut samples = Vec::new();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: serde_json::Value =
                serde_json::from_str(line).with_context(|| format!("parser output: {line}"))?;
            let text = |k: &str| v[k].as_str().unwrap_or_default().to_owned();
            samples.push(Sample {
                family: text("family"),
                kind: text("type"),
                name: text("name"),
                labels: v["labels"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                value: v["value"].as_f64(),
            });
        }
        Ok(Scrape { samples })
    }

    /// `GET {base_url}/metrics`, parsed.
    pub fn fetch(base_url: &str) -> Result<Scrape> {
        let (status, body) = crate::dev::http(&format!("{base_url}/metrics"), "GET", None, "")?;
        anyhow::ensure!(
            status == 200,
            "GET {base_url}/metrics answered {status}: {body}"
        );
        Scrape::parse(&body)
    }

    /// The samples named `name` whose labels include every one of `labels`. A counter's
    /// samples match its family's name too: the parser names them `<family>_total`, as
    /// OpenMetrics does.
    pub fn matching<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            let named = s.name == name
                || (s.kind == "counter"
                    && s.family == name
                    && s.name.strip_suffix("_total") == Some(name));
            named
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
    }

    /// The sum of the matching samples' values (0 when there is none).
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.matching(name, labels).filter_map(|s| s.value).sum()
    }

    /// The value of the one matching sample, if there is exactly one.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let mut found = self.matching(name, labels);
        let first = found.next()?;
        found.next().is_none().then_some(first.value).flatten()
    }

    /// The kind of family `family` (`counter`, `gauge`, `histogram`), if present.
    pub fn kind(&self, family: &str) -> Option<&str> {
        self.samples
            .iter()
            .find(|s| s.family == family)
            .map(|s| s.kind.as_str())
    }
}
