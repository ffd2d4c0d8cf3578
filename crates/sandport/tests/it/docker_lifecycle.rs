//! Discovery over time: restarts, removals, pauses, and a Docker that is gone or broken.

use std::time::Duration;

use http::StatusCode;
use sandport_testkit::docker::{random_conversation_id, Container, SandboxImage, TestNetwork};
use sandport_testkit::fake_docker::{EventsAnswer, FakeDocker, ListAnswer};

use bytes::Bytes;

use crate::harness::{
    docker_config, eventually, get, labelled_sandbox, send, send_within, Gateway, TOKEN,
};

fn authed(host: &str, target: &str) -> http::request::Builder {
    get(host, target).header("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn restarts_removals_and_pauses_are_seen_within_a_second() {
    let image = SandboxImage::build().unwrap();
    let network = TestNetwork::create().unwrap();
    let conversation = random_conversation_id();
    let sandbox = labelled_sandbox(&image, &network, &conversation, Some("alice"), &[5000]).await;
    let gw = Gateway::start(&docker_config("alice", network.name()));
    gw.wait_ready().await;
    let main = format!("sandport.test:{}", gw.addr.port());
    let target = format!("/runtime/{conversation}/5000/");
    let reply = send(gw.addr, authed(&main, &target)).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let old_ip = sandbox.ip(&network).unwrap();

    // Restart with a new address: a filler takes the old one while the sandbox is down.
    sandbox.stop_with_timeout(1).unwrap();
    let filler = Container::builder(&image).network(&network).run().unwrap();
    sandbox.start().unwrap();
    let new_ip = sandbox.ip(&network).unwrap();
    assert_ne!(old_ip, new_ip, "the test needs a new address");
    let took = eventually("new address routed", Duration::from_secs(5), || async {
        match send(
            gw.addr,
            authed(&main, &format!("{target}__sandbox/status?code=200")),
        )
        .await
        {
            Ok(reply) => reply.status == StatusCode::OK,
            Err(_) => false,
        }
    })
    .await;
    assert!(
        took < Duration::from_secs(1),
        "new address routed after {took:?}"
    );
    let echo = send(gw.addr, authed(&main, &target)).await.unwrap().json();
    assert_eq!(echo["hostname"].as_str().unwrap(), &sandbox.id()[..12]);
    drop(filler);

    // Paused: 503, quickly.
    sandbox.pause().unwrap();
    // Until the pause event lands, a request may reach the frozen container and wait: poll
    // with a short client timeout.
    let quick = || {
        let request = authed(&main, &target);
        send_within(Duration::from_millis(300), gw.addr, request, Bytes::new())
    };
    eventually("paused is 503", Duration::from_secs(3), || async {
        quick()
            .await
            .is_ok_and(|reply| reply.status == StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    sandbox.unpause().unwrap();
    eventually("unpaused is 200", Duration::from_secs(3), || async {
        quick()
            .await
            .is_ok_and(|reply| reply.status == StatusCode::OK)
    })
    .await;

    // Removed: 404 within a second.
    sandbox.remove().unwrap();
    let took = eventually("removed is 404", Duration::from_secs(5), || async {
        send(gw.addr, authed(&main, &target)).await.unwrap().status == StatusCode::NOT_FOUND
    })
    .await;
    assert!(took < Duration::from_secs(1), "removal seen after {took:?}");
}

#[tokio::test]
async fn an_unreachable_docker_means_503_never_404() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("docker.sock");
    let gw = Gateway::start(&format!(
        "[identity]\ntoken = \"{TOKEN}\"\nuser_id = \"alice\"\n[discovery]\ndocker_socket = \"{}\"\n",
        socket.display()
    ));
    let target = format!("/runtime/{}/5000/", random_conversation_id());
    let reply = send(gw.addr, authed("localhost", &target)).await.unwrap();
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.text(), "Docker service unavailable\n");
    let ready = send(gw.admin, get("localhost", "/ready")).await.unwrap();
    assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
    let health = send(gw.admin, get("localhost", "/health")).await.unwrap();
    assert_eq!(health.status, StatusCode::OK);
}

#[tokio::test]
async fn docker_errors_and_garbage_are_503_not_not_found() {
    // The fake engine negotiates the version like a real one and breaks only the list, so
    // the list path is what answers here.
    for list in [
        ListAnswer::Status(500),
        ListAnswer::Json("[{\"Id\":7}".to_owned()),
    ] {
        let docker = FakeDocker::start(list.clone(), EventsAnswer::Quiet).unwrap();
        let gw = Gateway::start(&format!(
            "[identity]\ntoken = \"{TOKEN}\"\n[discovery]\ndocker_socket = \"{}\"\n",
            docker.socket().display()
        ));
        eventually("the list was asked", Duration::from_secs(5), || async {
            docker.calls("/containers/json") >= 1
        })
        .await;
        assert!(docker.calls("/version") >= 1);
        let target = format!("/runtime/{}/5000/", random_conversation_id());
        let reply = send(gw.addr, authed("localhost", &target)).await.unwrap();
        assert_eq!(
            reply.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{list:?}: {}",
            reply.text()
        );
        let ready = send(gw.admin, get("localhost", "/ready")).await.unwrap();
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE, "{list:?}");
    }
}

#[tokio::test]
async fn trusted_header_mode_ignores_spoofed_identity() {
    let image = SandboxImage::build().unwrap();
    let network = TestNetwork::create().unwrap();
    let conversation = random_conversation_id();
    let sandbox = labelled_sandbox(&image, &network, &conversation, Some("alice"), &[5000]).await;
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("origin-verify");
    std::fs::write(&secret_file, "edge-shared-secret-0123\n").unwrap();
    let target = format!("/runtime/{conversation}/5000/");
    let config = |trusted: &str| {
        format!(
            "[identity]\nmode = \"trusted_header\"\ntrusted_proxies = [\"{trusted}\"]\nshared_secret_file = \"{}\"\n\
             [discovery]\nnetwork = \"{}\"\n",
            secret_file.display(),
            network.name()
        )
    };
    // Loopback is not trusted: the header is removed and the caller is anonymous.
    let untrusted = Gateway::start(&config("10.255.255.0/24"));
    untrusted.wait_ready().await;
    let spoof = get("localhost", &target)
        .header("x-cognito-user-id", "alice")
        .header("x-origin-verify", "edge-shared-secret-0123");
    assert_eq!(
        send(untrusted.addr, spoof).await.unwrap().status,
        StatusCode::UNAUTHORIZED
    );
    drop(untrusted);

    let trusted = Gateway::start(&config("127.0.0.1/32"));
    trusted.wait_ready().await;
    let edge = |user: &str, secret: &str| {
        get("localhost", &target)
            .header("x-cognito-user-id", user)
            .header("x-origin-verify", secret)
    };
    let reply = send(trusted.addr, edge("alice", "edge-shared-secret-0123"))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::OK);
    let headers = reply.json()["headers"].to_string();
    assert!(
        !headers.contains("x-cognito") && !headers.contains("edge-shared-secret"),
        "{headers}"
    );
    assert_eq!(
        send(trusted.addr, edge("alice", "wrong-secret-wrong"))
            .await
            .unwrap()
            .status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        send(trusted.addr, edge("bob", "edge-shared-secret-0123"))
            .await
            .unwrap()
            .status,
        StatusCode::FORBIDDEN
    );
    drop(sandbox);
}

/// Catalogue 95: a Docker API that answers a 100 MB or endless container list. sandport reads
/// at most 16 MiB of it, counts the failure, answers 503, and its memory stays small.
#[tokio::test]
async fn catalogue_95_a_huge_or_endless_container_list_is_capped() {
    for list in [ListAnswer::Huge(100 * 1024 * 1024), ListAnswer::Endless] {
        let docker = FakeDocker::start(list.clone(), EventsAnswer::Quiet).unwrap();
        let gw = Gateway::start(&format!(
            "[identity]\ntoken = \"{TOKEN}\"\n[discovery]\ndocker_socket = \"{}\"\n",
            docker.socket().display()
        ));
        let took = eventually("the list refused", Duration::from_secs(15), || async {
            gw.metric(
                "sandport_docker_failures_total",
                "reason=\"list_too_large\"",
            )
            .await
                >= 1.0
        })
        .await;
        let target = format!("/runtime/{}/5000/", random_conversation_id());
        let reply = send(gw.addr, authed("localhost", &target)).await.unwrap();
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{list:?}");
        assert_eq!(reply.text(), "Docker service unavailable\n");
        let ready = send(gw.admin, get("localhost", "/ready")).await.unwrap();
        assert_eq!(ready.status, StatusCode::SERVICE_UNAVAILABLE);
        let peak = gw.peak_rss_kib();
        eprintln!("{list:?}: refused after {took:?}, peak RSS {peak} KiB");
        assert!(peak < 80 * 1024, "{list:?}: peak RSS {peak} KiB");
    }
}

/// Catalogue 88: `docker stop` under load. Once the `die` event is in, a re-list (after the
/// `stop` event, the recheck, a reconcile) never puts Docker's lagging "running" view back:
/// no request waits for the connect timeout, and the route answers 404 at once.
#[tokio::test]
async fn catalogue_88_docker_stop_under_load_answers_not_running_promptly() {
    let image = SandboxImage::build().unwrap();
    let network = TestNetwork::create().unwrap();
    let conversation = random_conversation_id();
    let sandbox = labelled_sandbox(&image, &network, &conversation, Some("alice"), &[5000]).await;
    // A one-second reconcile, so a full re-list also lands inside the window checked below.
    let config = docker_config("alice", network.name()).replace(
        "[discovery]\n",
        "[discovery]\nreconcile_interval_secs = 1\n",
    );
    let gw = Gateway::start(&config);
    gw.wait_ready().await;
    let main = format!("sandport.test:{}", gw.addr.port());
    let target = format!("/runtime/{conversation}/5000/");
    assert_eq!(
        send(gw.addr, authed(&main, &target)).await.unwrap().status,
        StatusCode::OK
    );

    // Load: four clients in a loop, each request timed.
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (done, samples, main, target) =
            (done.clone(), samples.clone(), main.clone(), target.clone());
        let addr = gw.addr;
        clients.push(tokio::spawn(async move {
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                let started = std::time::Instant::now();
                let request = authed(&main, &target);
                let status = send_within(Duration::from_secs(5), addr, request, Bytes::new())
                    .await
                    .map(|reply| reply.status);
                samples
                    .lock()
                    .unwrap()
                    .push((started, started.elapsed(), status.ok()));
            }
        }));
    }
    let dies = gw
        .metric("sandport_discovery_events_total", "action=\"die\"")
        .await;
    let stops = gw
        .metric("sandport_discovery_events_total", "action=\"stop\"")
        .await;
    let id = sandbox.id().to_owned();
    let stopper = tokio::task::spawn_blocking(move || {
        sandport_testkit::docker::docker(["stop", "-t", "1", &id]).map(drop)
    });
    eventually("the die event", Duration::from_secs(15), || async {
        gw.metric("sandport_discovery_events_total", "action=\"die\"")
            .await
            > dies
    })
    .await;
    let die_seen = std::time::Instant::now();
    stopper.await.unwrap().unwrap();
    // Keep the load on until the re-lists that used to put the lagging view back have run:
    // the `stop` event's, and two full reconciles after the die event.
    let reconciles = gw
        .metric("sandport_discovery_resyncs_total", "cause=\"reconcile\"")
        .await;
    eventually(
        "stop event and two reconciles",
        Duration::from_secs(10),
        || async {
            gw.metric("sandport_discovery_events_total", "action=\"stop\"")
                .await
                > stops
                && gw
                    .metric("sandport_discovery_resyncs_total", "cause=\"reconcile\"")
                    .await
                    >= reconciles + 2.0
        },
    )
    .await;
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    for client in clients {
        client.await.unwrap();
    }
    let samples = samples.lock().unwrap();
    let after: Vec<_> = samples
        .iter()
        .filter(|(started, _, _)| *started > die_seen)
        .collect();
    assert!(
        after.len() > 20,
        "too little load after the die event: {}",
        after.len()
    );
    let slowest = after.iter().map(|(_, took, _)| *took).max().unwrap();
    eprintln!(
        "{} requests after the die event, slowest {slowest:?}",
        after.len()
    );
    for (_, took, status) in &after {
        assert_eq!(
            *status,
            Some(StatusCode::NOT_FOUND),
            "after the die event, in {took:?}"
        );
        assert!(
            *took < Duration::from_millis(500),
            "a request after the die event took {took:?}"
        );
    }
}
