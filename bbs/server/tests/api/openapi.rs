//! The OpenAPI description is served by the BBS and matches what it serves.

use std::collections::BTreeSet;

use crate::*;

fn refs(value: &serde_json::Value, out: &mut BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    out.insert(v.as_str().unwrap().to_string());
                }
                refs(v, out);
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn every_documented_route_is_served_and_every_schema_exists() {
    let bbs = start_bbs().await;
    let doc = bbs.client.openapi().await.unwrap();
    assert_eq!(doc, serde_json::to_value(diego_bbs::openapi()).unwrap());
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.len() >= 40, "only {} paths documented", paths.len());
    for required in [
        "/v1/desired_lrp/desire.r2",
        "/v1/actual_lrps/claim",
        "/v1/tasks/complete",
        "/v1/events/lrp_instances.r1",
        "/v1/store/health",
    ] {
        assert!(paths.contains_key(required), "{required} undocumented");
    }
    let http = reqwest::Client::new();
    for (path, item) in paths {
        if path.starts_with("/v1/events") {
            continue; // streams; covered by the events tests
        }
        let response = if item.get("post").is_some() {
            http.post(format!("{}{path}", bbs.url))
                .body("{}")
                .send()
                .await
                .unwrap()
        } else {
            http.get(format!("{}{path}", bbs.url)).send().await.unwrap()
        };
        let status = response.status().as_u16();
        // Empty requests are refused or answered, but the route exists and answers in JSON.
        assert!(
            ![404, 405].contains(&status) || path.contains("get_by") || path.contains("fetch"),
            "{path} answered {status}"
        );
        let body: serde_json::Value = response
            .json()
            .await
            .unwrap_or_else(|e| panic!("{path}: not JSON: {e}"));
        if status >= 400 {
            assert!(body["error"]["type"].is_string(), "{path}: {body}");
        }
    }
    let mut referenced = BTreeSet::new();
    refs(&doc, &mut referenced);
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for r in &referenced {
        let name = r.strip_prefix("#/components/schemas/").unwrap();
        assert!(
            schemas.contains_key(name),
            "{r} is referenced but not defined"
        );
    }
    for schema in [
        "DesiredLrp",
        "ActualLrp",
        "Task",
        "Action",
        "Event",
        "ErrorResponse",
    ] {
        assert!(schemas.contains_key(schema), "schema {schema} missing");
    }
}
