//! Bad input gets a 4xx with a message and changes nothing.

use diego_model::requests::ErrorResponse;

use crate::*;

async fn post(url: &str, path: &str, body: impl Into<reqwest::Body>) -> (u16, ErrorResponse) {
    let response = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let error =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not a JSON error ({e}): {text}"));
    (status, error)
}

#[tokio::test]
async fn bad_requests_are_4xx_with_a_message_and_store_nothing() {
    let bbs = start_bbs().await;
    let url = &bbs.url;
    let desire = "/v1/desired_lrp/desire.r2";
    let valid = serde_json::to_value(lrp("web", 1)).unwrap();
    let with = |field: &str, value: serde_json::Value| {
        let mut lrp = valid.clone();
        lrp[field] = value;
        serde_json::json!({ "desired_lrp": lrp }).to_string()
    };
    let cases: Vec<(&str, String, u16, &str)> = vec![
        (
            "malformed JSON",
            "{\"desired_lrp\": {".into(),
            400,
            "InvalidJSON",
        ),
        ("not JSON at all", "hello".into(), 400, "InvalidJSON"),
        (
            "unknown field",
            with("instnaces", 3.into()),
            400,
            "instnaces",
        ),
        (
            "unknown wrapper field",
            serde_json::json!({"desired_lrp": valid, "extra": 1}).to_string(),
            400,
            "extra",
        ),
        (
            "negative instances",
            with("instances", (-1).into()),
            400,
            "instances must be >= 0",
        ),
        (
            "slash in guid",
            with("process_guid", "a/b".into()),
            400,
            "process_guid",
        ),
        (
            "wrong type",
            with("instances", "three".into()),
            400,
            "InvalidJSON",
        ),
        (
            "bad action",
            with("action", serde_json::json!({"runn": {}})),
            400,
            "InvalidJSON",
        ),
        (
            "huge instance count type overflow",
            with("instances", serde_json::json!(1u64 << 40)),
            400,
            "InvalidJSON",
        ),
    ];
    for (what, body, status, needle) in cases {
        let (got, error) = post(url, desire, body).await;
        assert_eq!(got, status, "{what}: {error:?}");
        let text = format!("{:?} {}", error.error.kind, error.error.message);
        assert!(
            text.contains(needle)
                || serde_json::to_string(&error.error.kind)
                    .unwrap()
                    .contains(needle),
            "{what}: {text}"
        );
    }
    // A 10 MB body is refused before it is read whole.
    let (status, error) = post(url, desire, vec![b' '; 10 * 1024 * 1024]).await;
    assert_eq!(status, 413, "{error:?}");
    assert!(error.error.message.contains("limit"), "{error:?}");

    // Other routes too.
    let (status, _) = post(
        url,
        "/v1/actual_lrps/claim",
        r#"{"process_guid":"web","index":-2}"#,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        url,
        "/v1/tasks/desire.r2",
        r#"{"task_guid":"../etc","domain":"d"}"#,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(
        url,
        "/v1/locks/lock",
        r#"{"resource":{"key":"k","owner":"o"},"ttl_in_seconds":0}"#,
    )
    .await;
    assert_eq!(status, 400);
    let (status, _) = post(url, "/v1/no/such/route", "{}").await;
    assert_eq!(status, 404);
    let response = reqwest::get(format!("{url}/v1/desired_lrps/list.r3"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    let response = reqwest::get(format!("{url}/v1/events?last_event_id=garbage"))
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 400);

    // Nothing was stored.
    assert!(
        bbs.client
            .desired_lrps(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        bbs.client
            .actual_lrps(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        bbs.client
            .tasks(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(bbs.client.ping().await.unwrap(), "and the BBS is still up");
}
