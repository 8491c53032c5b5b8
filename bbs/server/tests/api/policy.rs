//! The auction policy record: set and get round trips, large components, and bad input refused
//! with nothing stored.

use base64::Engine;
use diego_model::ErrorType;
use diego_model::requests::AuctionPolicyRecord;
use sha2::{Digest, Sha256};

use crate::*;

fn sha_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A component-sized blob (not a real component: the BBS only stores it).
fn blob(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| u8::try_from((i * 7919) % 251).unwrap())
        .collect()
}

fn component_policy(bytes: &[u8]) -> AuctionPolicyRecord {
    AuctionPolicyRecord {
        name: "my-policy".into(),
        builtin: false,
        sha256: sha_hex(bytes),
        component: base64::engine::general_purpose::STANDARD.encode(bytes),
        set_at: 0,
        set_by: "http://127.0.0.1:9016".into(),
    }
}

#[tokio::test]
async fn policies_round_trip_including_components_larger_than_the_body_limit() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    assert_eq!(c.auction_policy().await.unwrap(), None, "none until set");

    let builtin = AuctionPolicyRecord {
        name: "binpack".into(),
        builtin: true,
        set_by: "operator".into(),
        ..Default::default()
    };
    c.set_auction_policy(&builtin).await.unwrap();
    let got = c.auction_policy().await.unwrap().unwrap();
    assert_eq!((got.name.as_str(), got.builtin), ("binpack", true));
    assert!(got.set_at > 0, "the BBS stamps when it was set");
    assert_eq!(got.set_by, "operator");

    // 3 MiB of component: over the 1 MiB limit of other routes, stored in chunks.
    let bytes = blob(3 * 1024 * 1024);
    let mut policy = component_policy(&bytes);
    policy.set_at = 42;
    c.set_auction_policy(&policy).await.unwrap();
    let got = c.auction_policy().await.unwrap().unwrap();
    assert_eq!(got, policy);

    // Replacing it with a smaller one leaves only the new one.
    let small = component_policy(&blob(1000));
    c.set_auction_policy(&small).await.unwrap();
    let got = c.auction_policy().await.unwrap().unwrap();
    assert_eq!(got.component, small.component);
    assert_eq!(got.sha256, small.sha256);

    // Back to a built-in.
    c.set_auction_policy(&builtin).await.unwrap();
    let got = c.auction_policy().await.unwrap().unwrap();
    assert!(got.builtin && got.component.is_empty() && got.sha256.is_empty());
}

#[tokio::test]
async fn bad_policies_are_refused_and_nothing_is_stored() {
    let bbs = start_bbs().await;
    let c = &bbs.client;
    let bytes = blob(4096);
    let mut bad_base64 = component_policy(&bytes);
    bad_base64.component = "not base64 at all!".into();
    let mut mismatch = component_policy(&bytes);
    mismatch.sha256 = sha_hex(b"something else");
    let mut short_sha = component_policy(&bytes);
    short_sha.sha256 = "abc".into();
    let builtin_with_component = AuctionPolicyRecord {
        name: "classic".into(),
        builtin: true,
        component: component_policy(&bytes).component,
        ..Default::default()
    };
    let builtin_without_name = AuctionPolicyRecord {
        builtin: true,
        ..Default::default()
    };
    let component_missing = AuctionPolicyRecord {
        name: "x".into(),
        sha256: sha_hex(&bytes),
        ..Default::default()
    };
    for (what, policy, says) in [
        ("bad base64", bad_base64, "base64"),
        ("sha mismatch", mismatch, "sha256"),
        ("short sha", short_sha, "sha256"),
        (
            "builtin with a component",
            builtin_with_component,
            "component",
        ),
        ("builtin without a name", builtin_without_name, "name"),
        ("no component", component_missing, "component"),
    ] {
        let err = c.set_auction_policy(&policy).await.unwrap_err();
        assert_eq!(err.kind(), Some(ErrorType::InvalidRequest), "{what}: {err}");
        assert!(err.to_string().contains(says), "{what}: {err}");
        assert_eq!(c.auction_policy().await.unwrap(), None, "{what}: stored");
    }

    // Raw HTTP: a 400 with a typed error, and unknown fields refused.
    let http = reqwest::Client::new();
    let url = format!("{}/v1/auction_policy/set", bbs.url);
    let response = http
        .post(&url)
        .body(r#"{"policy":{"name":"x","builtin":false,"component":"%%%","sha256":""}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["type"], "InvalidRequest", "{body}");
    let response = http
        .post(&url)
        .body(r#"{"policy":{"name":"x","builtin":true,"extra":1}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);

    // A valid policy after all that is stored.
    c.set_auction_policy(&component_policy(&bytes))
        .await
        .unwrap();
    assert!(c.auction_policy().await.unwrap().is_some());
}

#[tokio::test]
async fn only_the_policy_routes_take_large_bodies() {
    let bbs = start_bbs().await;
    let http = reqwest::Client::new();
    let big = format!(
        r#"{{"policy":{{"name":"x","component":"{}"}}}}"#,
        "A".repeat(9 * 1024 * 1024)
    );
    let response = http
        .post(format!("{}/v1/auction_policy/set", bbs.url))
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "over 8 MiB");

    let two_mib = format!(r#"{{"domain":"{}"}}"#, "a".repeat(2 * 1024 * 1024));
    let response = http
        .post(format!("{}/v1/domains/upsert", bbs.url))
        .body(two_mib)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413, "other routes keep max_body_bytes");
}

#[tokio::test]
async fn the_new_routes_never_answer_garbage_with_a_5xx() {
    let bbs = start_bbs().await;
    let http = reqwest::Client::new();
    let garbage: [&[u8]; 12] = [
        b"null",
        b"[]",
        b"\"x\"",
        b"42",
        b"{",
        b"\xff\xfe\x00",
        br#"{"policy":null}"#,
        br#"{"policy":{"set_at":"yesterday"}}"#,
        br#"{"policy":{"name":"\u0000","builtin":true}}"#,
        br#"{"policy":{"builtin":false,"component":"","sha256":"zz"}}"#,
        br#"{"policy":{"builtin":false,"component":"AAAA","sha256":"0000000000000000000000000000000000000000000000000000000000000000"}}"#,
        br#"{"policy":{"set_at":99999999999999999999999}}"#,
    ];
    for route in [
        "/v1/converge",
        "/v1/auction_policy/get",
        "/v1/auction_policy/set",
    ] {
        for body in garbage {
            let response = http
                .post(format!("{}{route}", bbs.url))
                .body(body.to_vec())
                .send()
                .await
                .unwrap();
            let status = response.status().as_u16();
            let text = String::from_utf8_lossy(body);
            // Serde reads `[]` as an empty struct, so `{}`-bodied routes may answer 200.
            assert!(status < 500, "{route} answered {status} to {text}");
            if route.ends_with("/set") {
                assert!((400..500).contains(&status), "{route}: {status} to {text}");
                let error: serde_json::Value = response.json().await.unwrap();
                assert!(error["error"]["type"].is_string(), "{route}: {error}");
            }
        }
    }
    assert_eq!(bbs.client.auction_policy().await.unwrap(), None);
}
