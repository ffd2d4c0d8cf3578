//! Docker discovery end to end: labelled containers from a locally built image, on a
//! user-defined bridge network, reached through the real binary.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::StatusCode;
use sandport_testkit::docker::{random_conversation_id, Container, SandboxImage, TestNetwork};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{
    docker_config, eventually, get, labelled_sandbox, runtime_host, send, Gateway, TOKEN,
};

/// An image, a network, three sandboxes (alice's, bob's, an unlabelled one) and a gateway
/// acting for alice. Dropped in reverse order: gateway, containers, network, image.
struct World {
    gateway: Gateway,
    alice: String,
    bob: String,
    unlabelled: String,
    published: u16,
    _containers: Vec<Container>,
    _network: TestNetwork,
    _image: SandboxImage,
}

async fn world() -> World {
    let image = SandboxImage::build().expect("sandbox image (is Docker running?)");
    let network = TestNetwork::create().unwrap();
    let (alice, bob, unlabelled) = (
        random_conversation_id(),
        random_conversation_id(),
        random_conversation_id(),
    );
    let start = |labels: Vec<(&str, &str)>, publish: bool| {
        let mut builder = Container::builder(&image)
            .network(&network)
            .labels(labels)
            .sandbox_ports(&[5000, 8000, 8001]);
        if publish {
            builder = builder.publish(8000);
        }
        builder.run().unwrap()
    };
    let containers = vec![
        start(
            vec![("conversation_id", &alice), ("user_id", "alice")],
            true,
        ),
        start(vec![("conversation_id", &bob), ("user_id", "bob")], false),
        start(vec![("conversation_id", &unlabelled)], false),
    ];
    for container in &containers {
        container
            .wait_http(&network, 5000, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let published = containers[0].published_port(8000).unwrap();
    let gateway = Gateway::start(&docker_config("alice", network.name()));
    gateway.wait_ready().await;
    World {
        gateway,
        alice,
        bob,
        unlabelled,
        published,
        _containers: containers,
        _network: network,
        _image: image,
    }
}

/// What `sandport routes --config CONFIG` prints; it must succeed.
fn sandport_routes(config: &std::path::Path) -> String {
    let routes = std::process::Command::new(env!("CARGO_BIN_EXE_sandport"))
        .args(["routes", "--config"])
        .arg(config)
        .output()
        .unwrap();
    assert!(
        routes.status.success(),
        "{}",
        String::from_utf8_lossy(&routes.stderr)
    );
    String::from_utf8_lossy(&routes.stdout).into_owned()
}

fn authed(host: &str, target: &str) -> http::request::Builder {
    get(host, target).header("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn docker_sandboxes_end_to_end() {
    let w = world().await;
    let gw = &w.gateway;
    let main = format!("sandport.test:{}", gw.addr.port());

    // Both route forms, raw targets byte for byte.
    for target in ["/a%2Fb//c/../d?x=%20", "/"] {
        let reply = send(
            gw.addr,
            authed(&main, &format!("/runtime/{}/5000{target}", w.alice)),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(reply.json()["target"], target);
        assert_eq!(reply.json()["port"], 5000);
        let reply = send(gw.addr, authed(&runtime_host(5000, &w.alice, gw), target))
            .await
            .unwrap();
        assert_eq!(reply.json()["target"], target);
    }
    // A published host port is translated to its container port; system ports are not.
    let reply = send(
        gw.addr,
        authed(&main, &format!("/runtime/{}/{}/x", w.alice, w.published)),
    )
    .await
    .unwrap();
    assert_eq!(reply.json()["port"], 8000);
    let reply = send(
        gw.addr,
        authed(&main, &format!("/runtime/{}/8001/x", w.alice)),
    )
    .await
    .unwrap();
    assert_eq!(reply.json()["port"], 8001);

    // Ownership and errors.
    let denied = send(gw.addr, authed(&main, &format!("/runtime/{}/5000/", w.bob)))
        .await
        .unwrap();
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    assert_eq!(
        denied.text(),
        "Access denied: you do not own this conversation\n"
    );
    let unlabelled = send(
        gw.addr,
        authed(&main, &format!("/runtime/{}/5000/", w.unlabelled)),
    )
    .await
    .unwrap();
    assert_eq!(
        unlabelled.text(),
        "Access denied: container not properly labeled with owner\n"
    );
    let anonymous = send(gw.addr, get(&runtime_host(5000, &w.alice, gw), "/"))
        .await
        .unwrap();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    let unknown = random_conversation_id();
    let missing = send(gw.addr, authed(&main, &format!("/runtime/{unknown}/5000/")))
        .await
        .unwrap();
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert_eq!(
        missing.text(),
        format!("No container found for conversation {unknown}\n")
    );
    let closed = send(
        gw.addr,
        authed(&main, &format!("/runtime/{}/5999/", w.alice)),
    )
    .await
    .unwrap();
    assert_eq!(closed.status, StatusCode::BAD_GATEWAY);
    let probe = authed(&main, &format!("/runtime/{}/5999/", w.alice))
        .header("origin", "http://sandport.test")
        .header("accept", "application/json");
    assert_eq!(
        send(gw.addr, probe).await.unwrap().status,
        StatusCode::NO_CONTENT
    );

    // Identity headers and sandport's cookie never reach the sandbox.
    let spoof = get(&runtime_host(5000, &w.alice, gw), "/")
        .header("cookie", format!("sandport_token={TOKEN}; theme=dark"))
        .header("x-cognito-user-id", "bob");
    let echo = send(gw.addr, spoof).await.unwrap().json();
    let headers = echo["headers"].to_string();
    assert!(
        !headers.contains(TOKEN) && !headers.contains("x-cognito"),
        "{headers}"
    );
    assert!(headers.contains("theme=dark"));

    // `sandport routes` and `explain` see the same sandboxes, straight from Docker.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sandport.toml");
    std::fs::write(&config, docker_config("alice", w._network.name())).unwrap();
    let table = sandport_routes(&config);
    for conversation in [&w.alice, &w.bob, &w.unlabelled] {
        assert!(table.contains(conversation.as_str()), "{table}");
    }
    assert!(table.contains(&format!("{}->8000", w.published)), "{table}");
    let url = format!("http://{}/x", runtime_host(5000, &w.bob, gw));
    let explain = std::process::Command::new(env!("CARGO_BIN_EXE_sandport"))
        .args(["explain", &url, "--user", "alice", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(
        text.contains("refuse 403 Access denied: you do not own this conversation"),
        "{text}"
    );

    // Steady state: requests make no Docker API call. Other tests start containers meanwhile
    // and discovery works for each of their events, so measure over a window in which
    // discovery itself was idle (retrying a few times).
    let discovery_activity = || async {
        gw.metric("sandport_discovery_events_total", "").await
            + gw.metric("sandport_discovery_resyncs_total", "").await
    };
    // Discovery counts its work before each Docker call; the margins let work that began just
    // before the window finish outside it. They bound a measurement window (no observable
    // says "no discovery work is about to start"), not a wait for something to happen.
    let margin = Duration::from_millis(500);
    let mut quiet_window = false;
    for _ in 0..30 {
        let activity = discovery_activity().await;
        tokio::time::sleep(margin).await;
        let calls = gw.metric("sandport_docker_api_calls_total", "").await;
        for _ in 0..50 {
            let target = format!("/runtime/{}/5000/", w.alice);
            let reply = send(gw.addr, authed(&main, &target)).await.unwrap();
            assert_eq!(reply.status, StatusCode::OK);
        }
        let after = gw.metric("sandport_docker_api_calls_total", "").await;
        tokio::time::sleep(margin).await;
        if discovery_activity().await == activity {
            assert_eq!(calls, after, "50 requests called Docker");
            quiet_window = true;
            break;
        }
    }
    assert!(quiet_window, "discovery was never idle for 50 requests");
    let total = gw.metric("sandport_docker_api_calls_total", "").await;
    assert!(
        total >= 3.0,
        "the metric counts version, list and events: {total}"
    );
}

#[tokio::test]
async fn websocket_and_sse_stream_through_both_forms() {
    let w = world().await;
    let gw = &w.gateway;
    let main = format!("sandport.test:{}", gw.addr.port());
    for host in [main.clone(), runtime_host(5000, &w.alice, gw)] {
        let path = if host == main {
            format!("/runtime/{}/5000/__sandbox/ws-headers", w.alice)
        } else {
            "/__sandbox/ws-headers".into()
        };
        let (mut ws, response) = crate::harness::websocket(gw.addr, &host, &path).await;
        assert_eq!(response.status(), StatusCode::SWITCHING_PROTOCOLS);
        let first = ws.next().await.unwrap().unwrap().into_text().unwrap();
        let echo: serde_json::Value = serde_json::from_str(&first).unwrap();
        assert!(
            !echo["headers"].to_string().contains(TOKEN),
            "the token reached the sandbox"
        );
        assert!(echo["headers"]
            .to_string()
            .contains(&format!("[\"host\",\"{host}\"]")));
        for message in [
            Message::text("hello"),
            Message::binary(vec![0u8, 1, 2, 255]),
        ] {
            ws.send(message.clone()).await.unwrap();
            assert_eq!(ws.next().await.unwrap().unwrap(), message);
        }
        assert_eq!(gw.metric("sandport_websockets_open", "").await, 1.0);
        ws.close(None).await.unwrap();
    }

    // SSE: events arrive one by one, as the sandbox sends them.
    let target = format!(
        "/runtime/{}/5000/__sandbox/sse?n=4&interval_ms=300",
        w.alice
    );
    let mut sender = crate::harness::connect(gw.addr).await;
    let request = authed(&main, &target)
        .body(http_body_util::Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    let started = Instant::now();
    let mut arrivals = Vec::new();
    use http_body_util::BodyExt;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push((
                started.elapsed(),
                String::from_utf8_lossy(&data).into_owned(),
            ));
        }
    }
    let text: String = arrivals.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(text, "data: 0\n\ndata: 1\n\ndata: 2\n\ndata: 3\n\n");
    assert!(arrivals.len() >= 4, "events were batched: {arrivals:?}");
    assert!(
        arrivals[0].0 < Duration::from_millis(250),
        "first event late: {arrivals:?}"
    );
    assert!(
        arrivals.last().unwrap().0 >= Duration::from_millis(850),
        "{arrivals:?}"
    );
}

#[tokio::test]
async fn fifty_mib_each_way_with_bounded_gateway_memory() {
    const SIZE: u64 = 50 * 1024 * 1024;
    let w = world().await;
    let gw = &w.gateway;
    let main = format!("sandport.test:{}", gw.addr.port());

    // Upload: a streamed body, generated chunk by chunk.
    let mut sender = crate::harness::connect(gw.addr).await;
    let chunks = futures_util::stream::iter((0..SIZE / 65536).map(|_| {
        Ok::<_, std::convert::Infallible>(http_body::Frame::data(Bytes::from(vec![7u8; 65536])))
    }));
    let request = authed(&main, &format!("/runtime/{}/5000/upload", w.alice))
        .method("POST")
        .header("content-length", SIZE)
        .body(http_body_util::StreamBody::new(chunks))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    use http_body_util::BodyExt;
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let echo: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(echo["body_len"], SIZE);

    // Download: counted as it streams, never held.
    let mut sender = crate::harness::connect(gw.addr).await;
    let request = authed(
        &main,
        &format!("/runtime/{}/5000/__sandbox/download?bytes={SIZE}", w.alice),
    )
    .body(http_body_util::Empty::<Bytes>::new())
    .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    let mut received = 0u64;
    let mut mismatches = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            for (offset, byte) in data.iter().enumerate() {
                if *byte
                    != sandport_testkit::sandbox_server::download_byte(received + offset as u64)
                {
                    mismatches += 1;
                }
            }
            received += data.len() as u64;
        }
    }
    assert_eq!(received, SIZE);
    assert_eq!(mismatches, 0);
    let peak = gw.peak_rss_kib();
    assert!(
        peak < 40 * 1024,
        "gateway peak RSS {peak} KiB after 100 MiB of traffic"
    );
}

/// OIDC mode against a real container: whatever the browser holds, the container sees no
/// token, no sandport cookie and no identity header, on either route form.
#[tokio::test]
async fn a_container_never_receives_oidc_credentials() {
    use sandport_testkit::oidc::TestProvider;
    let image = SandboxImage::build().unwrap();
    let network = TestNetwork::create().unwrap();
    let conversation = random_conversation_id();
    let sandbox = labelled_sandbox(&image, &network, &conversation, Some("alice"), &[5000]).await;
    let provider = TestProvider::start("docker-client", "docker-client-secret-0123")
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, "docker-client-secret-0123").unwrap();
    let gateway = Gateway::start(&format!(
        "[routing]\nbase_domain = \"sandport.test\"\n\
         [identity]\nmode = \"oidc\"\nissuer = \"{}\"\nclient_id = \"docker-client\"\nclient_secret_file = \"{}\"\n\
         [discovery]\nnetwork = \"{}\"\n",
        provider.issuer(),
        secret.display(),
        network.name()
    ));
    gateway.wait_ready().await;
    let id_token = provider.mint(provider.standard_claims("alice"));
    let main = format!("sandport.test:{}", gateway.addr.port());
    let request = get(&main, &format!("/runtime/{conversation}/5000/echo"))
        .header(
            "cookie",
            format!("id_token={id_token}; refresh_token=r; sandport_login=l; theme=dark"),
        )
        .header("authorization", format!("Bearer {id_token}"))
        .header("x-cognito-user-id", "alice")
        .header("x-sandport-identity", "forged");
    let reply = send(gateway.addr, request).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(
        reply.json()["hostname"].as_str().unwrap(),
        &sandbox.id()[..12]
    );
    let headers = reply.json()["headers"].to_string();
    for secret in [
        id_token.as_str(),
        "refresh_token",
        "sandport_login",
        "x-cognito",
        "x-sandport-identity",
        "authorization",
    ] {
        assert!(
            !headers.contains(secret),
            "{secret} reached the container: {headers}"
        );
    }
    assert!(
        headers.contains("theme=dark"),
        "the app's own cookies still flow: {headers}"
    );
    // Without the token, the same path is refused before discovery is asked.
    let anonymous = send(
        gateway.addr,
        get(&main, &format!("/runtime/{conversation}/5000/echo")),
    )
    .await
    .unwrap();
    assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
}

/// Catalogue 86: two containers with one conversation id and different owners. Neither owner
/// is served (409, with a metric and a log line) until one container is gone; then the other
/// owner's routes come back.
#[tokio::test]
async fn catalogue_86_two_owners_of_one_conversation_are_both_refused() {
    let image = SandboxImage::build().expect("sandbox image (is Docker running?)");
    let network = TestNetwork::create().unwrap();
    let conversation = random_conversation_id();
    let start = |owner: &str| {
        Container::builder(&image)
            .network(&network)
            .labels(vec![
                ("conversation_id", conversation.as_str()),
                ("user_id", owner),
            ])
            .sandbox_ports(&[5000])
            .run()
            .unwrap()
    };
    let alices = start("alice");
    let bobs = start("bob");
    for container in [&alices, &bobs] {
        container
            .wait_http(&network, 5000, Duration::from_secs(10))
            .await
            .unwrap();
    }
    let as_alice = Gateway::start(&docker_config("alice", network.name()));
    let as_bob = Gateway::start(&docker_config("bob", network.name()));
    let target = format!("/runtime/{conversation}/5000/");
    for gateway in [&as_alice, &as_bob] {
        gateway.wait_ready().await;
        let response = send(gateway.addr, authed("localhost", &target))
            .await
            .unwrap();
        assert_eq!(response.status, StatusCode::CONFLICT, "{:?}", response.body);
        assert!(String::from_utf8_lossy(&response.body).contains("different owners"));
        assert_eq!(
            gateway
                .metric("sandport_discovery_contested_conversations", "")
                .await,
            1.0
        );
        assert!(
            gateway
                .metric("sandport_errors_total", "reason=\"contested_owner\"")
                .await
                >= 1.0
        );
    }
    // The operator sees the conflict in `sandport routes`, without the other owner's traffic.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sandport.toml");
    std::fs::write(&config, docker_config("alice", network.name())).unwrap();
    let listing = sandport_routes(&config);
    assert!(
        listing.contains(&format!("routed to nobody): {conversation}")),
        "{listing}"
    );
    assert_eq!(listing.matches("CONTESTED").count(), 2, "{listing}");

    bobs.remove().unwrap();
    // The bound: routing is back within 1 s of the other container's removal.
    let back = eventually(
        "alice's route comes back",
        Duration::from_secs(1),
        || async {
            send(as_alice.addr, authed("localhost", &target))
                .await
                .is_ok_and(|response| response.status == StatusCode::OK)
        },
    )
    .await;
    println!("catalogue 86: alice served again {back:?} after bob's container was removed");
    // logged at error level: an operator must look
    as_alice
        .wait_for_log_line("the contested conversation is logged as an error", |line| {
            line.contains("ERROR")
                && line.contains("containers of different owners carry one conversation id")
        })
        .await;
}

/// Catalogue 45 and 84: a sandbox on the host network would hand its owner the gateway host's
/// loopback. Refused by default (502 for any port, 403 for sandport's own listeners); allowed
/// only when the operator says so, and sandport's admin port even then stays refused.
#[tokio::test]
async fn catalogue_45_84_a_host_network_sandbox_never_reaches_the_hosts_loopback() {
    let image = SandboxImage::build().expect("sandbox image (is Docker running?)");
    let network = TestNetwork::create().unwrap();
    // A service only the host's loopback offers: what an attacker would be after.
    let host_only = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let host_only_port = host_only.local_addr().unwrap().port();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut stream, _)) = host_only.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 9\r\nconnection: close\r\n\r\nhost-only")
                    .await;
            });
        }
    });
    let conversation = random_conversation_id();
    // Port 0: the sandbox server listens on an ephemeral host port, clashing with nothing.
    let _sandbox = Container::builder(&image)
        .host_network()
        .labels(vec![
            ("conversation_id", conversation.as_str()),
            ("user_id", "alice"),
        ])
        .sandbox_ports(&[0])
        .run()
        .unwrap();
    let refusing = Gateway::start(&docker_config("alice", network.name()));
    let allowing = Gateway::start(&docker_config("alice", network.name()).replace(
        "max_staleness_secs = 2\n",
        "max_staleness_secs = 2\nallow_host_local_addresses = true\n",
    ));
    for gateway in [&refusing, &allowing] {
        gateway.wait_ready().await;
    }
    let to = |port: u16, path: &str| format!("/runtime/{conversation}/{port}{path}");
    let answer = |gateway: &Gateway, target: String| {
        let addr = gateway.addr;
        async move { send(addr, authed("localhost", &target)).await.unwrap() }
    };
    let refused = eventually(
        "discovery sees the host-network sandbox",
        Duration::from_secs(10),
        || async {
            answer(&refusing, to(host_only_port, "/")).await.status != StatusCode::NOT_FOUND
        },
    )
    .await;
    println!("catalogue 45/84: sandbox discovered after {refused:?}");
    let response = answer(&refusing, to(host_only_port, "/")).await;
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("host-local address"), "{body}");
    assert!(!body.contains("host-only"));
    assert!(
        refusing
            .metric("sandport_errors_total", "reason=\"host_local_address\"")
            .await
            >= 1.0
    );
    // The admin listener, the gateway's own port and loopback over IPv6: never.
    for gateway in [&refusing, &allowing] {
        for port in [gateway.admin.port(), gateway.addr.port()] {
            let response = answer(gateway, to(port, "/metrics")).await;
            let body = String::from_utf8_lossy(&response.body).into_owned();
            assert_eq!(
                response.status,
                StatusCode::FORBIDDEN,
                "port {port}: {body}"
            );
            assert!(!body.contains("sandport_"), "port {port} leaked: {body}");
        }
    }
    // The operator's explicit choice: the same sandbox then reaches the host's loopback, which
    // proves the refusal above is the policy and not an unreachable port.
    let response = answer(&allowing, to(host_only_port, "/")).await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(&response.body[..], b"host-only");
}
