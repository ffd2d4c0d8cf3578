//! Per-sandbox limits (catalogue 108): past `max_requests_per_sandbox` exchanges in flight to
//! one sandbox, 429 with `Retry-After`; other sandboxes are unaffected, and a freed slot serves.

use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use sandport_testkit::sandbox_server;

use crate::harness::{
    eventually, get, send, send_within, static_config, websocket, Gateway, STATIC_CONVERSATION,
    TOKEN,
};

const OTHER: &str = "fedcba9876543210fedcba9876543210";

fn runtime(gw: &Gateway, conversation: &str, port: u16, rest: &str) -> http::request::Builder {
    get(
        &format!("sandport.test:{}", gw.addr.port()),
        &format!("/runtime/{conversation}/{port}/{rest}"),
    )
    .header("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn catalogue_108_a_sandbox_past_its_limit_gets_429_and_others_are_unaffected() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let extra = format!(
        "[[discovery.sandboxes]]\nconversation_id = \"{OTHER}\"\nuser_id = \"alice\"\n\
         address = \"127.0.0.1\"\n[proxy]\nmax_requests_per_sandbox = 2\n"
    );
    let gw = Gateway::start(&static_config(upstream, &extra));
    gw.wait_ready().await;
    let port = upstream.port();

    // One slow request and one WebSocket hold both slots of the first sandbox.
    let slow = runtime(&gw, STATIC_CONVERSATION, port, "__sandbox/slow?ms=3000");
    let slow = tokio::spawn(send(gw.addr, slow));
    let host = format!("sandport.test:{}", gw.addr.port());
    let ws_path = format!("/runtime/{STATIC_CONVERSATION}/{port}/__sandbox/ws");
    let (mut ws, _) = websocket(gw.addr, &host, &ws_path).await;
    let quick = || {
        let request = runtime(&gw, STATIC_CONVERSATION, port, "");
        send_within(Duration::from_secs(5), gw.addr, request, Bytes::new())
    };
    eventually(
        "the third exchange is refused",
        Duration::from_secs(3),
        || async {
            quick()
                .await
                .is_ok_and(|reply| reply.status == StatusCode::TOO_MANY_REQUESTS)
        },
    )
    .await;
    let refused = quick().await.unwrap();
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.header("retry-after"), Some("1"));
    assert!(
        gw.metric("sandport_errors_total", "reason=\"sandbox_busy\"")
            .await
            >= 1.0
    );

    // Another sandbox of the same user is served meanwhile.
    let other = send(gw.addr, runtime(&gw, OTHER, port, "")).await.unwrap();
    assert_eq!(other.status, StatusCode::OK);

    // The slow request ends and the WebSocket closes: both slots are free again.
    assert_eq!(slow.await.unwrap().unwrap().status, StatusCode::OK);
    ws.close(None).await.unwrap();
    drop(ws);
    eventually("slots freed", Duration::from_secs(5), || async {
        let first = quick()
            .await
            .is_ok_and(|reply| reply.status == StatusCode::OK);
        let second = quick()
            .await
            .is_ok_and(|reply| reply.status == StatusCode::OK);
        first && second
    })
    .await;
}
