//! The registration API over real HTTP: full tables per emitter, register and unregister, bad
//! bodies.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed unwrap is a failed test

mod common;

use common::*;
use diego_router::{RouteItem, RouterClient};
use reqwest::{Method, StatusCode};
use serde_json::json;

#[tokio::test]
async fn each_emitter_replaces_only_its_own_table() {
    let router = start_router().await;
    let a = RouterClient::new(&router.admin, "a");
    let b = RouterClient::new(&router.admin, "b");
    let e1 = endpoint("10.0.0.1:61001".parse().unwrap(), 0);
    let e2 = endpoint("10.0.0.2:61002".parse().unwrap(), 1);
    a.put_table(vec![RouteItem::endpoint("one.local", e1.clone())])
        .await
        .unwrap();
    b.put_table(vec![RouteItem::endpoint("one.local", e2.clone())])
        .await
        .unwrap();
    assert_eq!(
        a.table().await.unwrap()["one.local"],
        vec![e1.clone(), e2.clone()]
    );

    a.put_table(vec![RouteItem::host("two.local")])
        .await
        .unwrap();
    let table = a.table().await.unwrap();
    assert_eq!(table["one.local"], vec![e2.clone()]);
    assert!(table["two.local"].is_empty());

    b.register(vec![RouteItem::endpoint("two.local", e1.clone())])
        .await
        .unwrap();
    b.unregister(vec![RouteItem::endpoint("one.local", e2.clone())])
        .await
        .unwrap();
    let table = b.table().await.unwrap();
    assert!(table["one.local"].is_empty(), "{table:?}");
    assert_eq!(table["two.local"], vec![e1.clone()]);
    b.unregister(vec![RouteItem::host("one.local")])
        .await
        .unwrap();
    assert!(!b.table().await.unwrap().contains_key("one.local"));
}

#[tokio::test]
async fn bad_bodies_are_refused_with_a_message() {
    let router = start_router().await;
    for (route, method, body) in [
        ("/v1/routes", Method::PUT, json!({"routes": "no"})),
        (
            "/v1/routes/register",
            Method::POST,
            json!({"routes": [{"hostname": ""}]}),
        ),
        (
            "/v1/routes/unregister",
            Method::POST,
            json!({"routes": [{"hostname": "a", "endpoint": {"address": "", "port": 1}}]}),
        ),
        (
            "/v1/routes/register",
            Method::POST,
            json!({"emitter": "x", "extra": 1}),
        ),
    ] {
        let response = router.admin_send(method, route, body).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{route}");
        let error: serde_json::Value = response.json().await.unwrap();
        assert!(!error["error"].as_str().unwrap().is_empty());
    }
    let response = router
        .http
        .post(format!("{}/v1/routes/register", router.admin))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        response
            .text()
            .await
            .unwrap()
            .contains("invalid routes body")
    );

    // A router that is not there is a transport error, quickly.
    let gone = RouterClient::new(format!("http://{}", closed_port().await), "x");
    assert!(gone.register(vec![]).await.is_err());
}
