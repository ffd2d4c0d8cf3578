//! Response shaping through the real binary: sandbox headers and cookies on both route forms,
//! the browser script injected into the app's pages (plain and compressed), served once.

use http::StatusCode;
use sandport_testkit::sandbox_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{get, send, Gateway, TOKEN};

const CID: &str = "0123456789abcdef0123456789abcdef";

async fn gateway(app: std::net::SocketAddr, extra: &str) -> Gateway {
    gateway_with_system_ports(app, &[8000, 8001], extra).await
}

async fn gateway_with_system_ports(
    app: std::net::SocketAddr,
    system_ports: &[u16],
    extra: &str,
) -> Gateway {
    let config = format!(
        "[routing]\nbase_domain = \"sandport.test\"\n[app]\nupstream = \"http://{app}\"\n\
         [identity]\ntoken = \"{TOKEN}\"\nuser_id = \"alice\"\n\
         [discovery]\nbackend = \"static\"\nsystem_ports = {system_ports:?}\n\
         [[discovery.sandboxes]]\nconversation_id = \"{CID}\"\nuser_id = \"alice\"\naddress = \"127.0.0.1\"\n{extra}"
    );
    let gateway = Gateway::start(&config);
    gateway.wait_ready().await;
    gateway
}

fn authed(host: &str, target: &str) -> http::request::Builder {
    get(host, target).header("authorization", format!("Bearer {TOKEN}"))
}

#[tokio::test]
async fn sandbox_responses_get_security_headers_and_isolated_cookies_on_both_forms() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = gateway(upstream, "").await;
    let port = upstream.port();
    let public = gw.addr.port();
    let cookies = "/__sandbox/set-cookie?c=id_token%3Dstolen%3B+Domain%3D.sandport.test\
                   &c=theme%3Ddark%3B+Domain%3D.sandport.test%3B+Path%3D%2F&c=sandport_token%3Dx";
    let path_form = (
        format!("sandport.test:{public}"),
        format!("/runtime/{CID}/{port}{cookies}"),
    );
    let host_form = (
        format!("{port}-{CID}.runtime.sandport.test:{public}"),
        cookies.to_owned(),
    );
    for (host, target) in [path_form, host_form] {
        let reply = send(gw.addr, authed(&host, &target)).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let set_cookies: Vec<_> = reply
            .headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        // on the path form an app port may set no cookie at all (catalogue 50)
        let expected: &[&str] = if host.starts_with("sandport.test") {
            &[]
        } else {
            &["theme=dark; Path=/; SameSite=Strict"]
        };
        assert_eq!(set_cookies, expected, "{host}");
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            reply.header("referrer-policy"),
            Some("strict-origin-when-cross-origin")
        );
        let policies: Vec<_> = reply
            .headers
            .get_all("content-security-policy")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert!(
            policies.contains(&&*format!(
                "frame-ancestors 'self' http://sandport.test:{public}"
            )),
            "{policies:?}"
        );
    }
    // A redirect to localhost goes to the runtime host of that port.
    let target = format!("/runtime/{CID}/{port}/__sandbox/status?code=302&location=http%3A%2F%2Flocalhost%3A3000%2Fnext%3Fa%3D1");
    let reply = send(gw.addr, authed(&format!("sandport.test:{public}"), &target))
        .await
        .unwrap();
    assert_eq!(reply.status, StatusCode::FOUND);
    assert_eq!(
        reply.header("location"),
        Some(&*format!(
            "http://3000-{CID}.runtime.sandport.test:{public}/next?a=1"
        ))
    );
}

#[tokio::test]
async fn app_pages_get_the_script_once_and_the_script_is_served() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = gateway(upstream, "").await;
    let host = format!("sandport.test:{}", gw.addr.port());
    let page = send(gw.addr, authed(&host, "/__sandbox/html"))
        .await
        .unwrap();
    assert_eq!(page.status, StatusCode::OK);
    let text = page.text();
    assert_eq!(
        text.matches("<script src=\"/_sandport/runtime-links.")
            .count(),
        1,
        "{text}"
    );
    assert!(
        text.contains("<head><script src=\"/_sandport/runtime-links."),
        "{text}"
    );
    assert!(
        text.contains("data-runtime-domain=\"runtime.sandport.test\""),
        "{text}"
    );
    assert!(page.header("content-length").is_none());
    assert_eq!(
        page.header("cache-control"),
        Some("no-cache, no-store, must-revalidate")
    );

    let src = text
        .split("src=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    // Served without authentication, cacheable forever, and the real script.
    let script = send(gw.addr, get(&host, &src)).await.unwrap();
    assert_eq!(script.status, StatusCode::OK);
    assert!(script
        .header("content-type")
        .unwrap()
        .starts_with("text/javascript"));
    assert!(script
        .header("cache-control")
        .unwrap()
        .contains("immutable"));
    assert!(
        script.text().contains("runtimeDomain"),
        "not the browser script"
    );
    let other = send(gw.addr, authed(&host, "/_sandport/other.js"))
        .await
        .unwrap();
    assert_eq!(other.status, StatusCode::NOT_FOUND);

    // JSON from the app is untouched.
    let json = send(gw.addr, authed(&host, "/api/x")).await.unwrap();
    assert!(!json.text().contains("runtime-links"));
}

/// An app that answers every request with a compressed HTML page whose `<head>` arrives split.
async fn compressed_app(encoding: &'static str) -> std::net::SocketAddr {
    let page = b"<!doctype html><html><he" as &[u8];
    let rest = b"ad><title>app</title></head><body>hello</body></html>" as &[u8];
    let mut plain = page.to_vec();
    plain.extend_from_slice(rest);
    let compressed = compress(encoding, &plain).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let body = compressed.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let _ = stream.read(&mut buffer).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Encoding: {encoding}\r\n\
                     Content-Length: {}\r\nETag: \"abc\"\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let (first, second) = body.split_at(body.len() / 2);
                let _ = stream.write_all(first).await;
                let _ = stream.flush().await;
                // The fault under test: the body arrives in two parts (not synchronisation).
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                let _ = stream.write_all(second).await;
            });
        }
    });
    addr
}

async fn compress(encoding: &str, data: &[u8]) -> Vec<u8> {
    use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder};
    let mut out = Vec::new();
    match encoding {
        "gzip" => GzipEncoder::new(data).read_to_end(&mut out).await.unwrap(),
        _ => BrotliEncoder::new(data)
            .read_to_end(&mut out)
            .await
            .unwrap(),
    };
    out
}

#[tokio::test]
async fn compressed_app_pages_are_decoded_and_injected() {
    for encoding in ["gzip", "br"] {
        let app = compressed_app(encoding).await;
        let gw = gateway(app, "").await;
        let host = format!("sandport.test:{}", gw.addr.port());
        let reply = send(gw.addr, authed(&host, "/")).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK);
        assert!(reply.header("content-encoding").is_none(), "{encoding}");
        assert!(reply.header("etag").is_none());
        let text = reply.text();
        assert!(
            text.starts_with("<!doctype html><html><head><script src=\"/_sandport/"),
            "{encoding}: {text}"
        );
        assert!(
            text.ends_with("<body>hello</body></html>"),
            "{encoding}: {text}"
        );
        assert_eq!(text.matches("runtime-links").count(), 1);
    }
}

#[tokio::test]
async fn sandbox_html_on_the_path_form_is_rewritten_when_enabled() {
    let upstream = sandbox_server::spawn_local().await.unwrap();
    let gw = gateway(upstream, "[rewrite]\nrewrite_sandbox_html = true\n").await;
    let public = gw.addr.port();
    let port = upstream.port();
    let path = format!("/runtime/{CID}/{port}/__sandbox/html");
    let reply = send(gw.addr, authed(&format!("sandport.test:{public}"), &path))
        .await
        .unwrap();
    let expected = format!("href=\"http://5000-{CID}.runtime.sandport.test:{public}/x\"");
    assert!(reply.text().contains(&expected), "{}", reply.text());
    // The host form serves the page as it is: there, localhost links are the script's job.
    let host = format!("{port}-{CID}.runtime.sandport.test:{public}");
    let reply = send(gw.addr, authed(&host, "/__sandbox/html"))
        .await
        .unwrap();
    assert!(
        reply.text().contains("href=\"http://localhost:5000/x\""),
        "{}",
        reply.text()
    );
}

/// An app whose page is `size` bytes of HTML, streamed in 64 KiB chunks.
async fn large_page_app(size: usize) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let _ = stream.read(&mut buffer).await;
                let head =
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n";
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream
                    .write_all(b"<!doctype html><html><head><title>big</title></head><body>")
                    .await;
                let row = "<p><a href=\"http://localhost:5000/item\">item</a> some text for the row</p>\n";
                let chunk = row.repeat(65536 / row.len());
                let mut sent = 0;
                while sent < size {
                    if stream.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                    sent += chunk.len();
                }
                let _ = stream.write_all(b"</body></html>").await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn large_pages_stream_through_the_rewriter_with_bounded_memory() {
    const SIZE: usize = 64 * 1024 * 1024;
    let app = large_page_app(SIZE).await;
    let gw = gateway(app, "").await;
    let host = format!("sandport.test:{}", gw.addr.port());
    let mut sender = crate::harness::connect(gw.addr).await;
    let request = authed(&host, "/")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let mut body = sender.send_request(request).await.unwrap().into_body();
    use http_body_util::BodyExt;
    let mut received = 0usize;
    let mut head = Vec::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            if head.len() < 512 {
                head.extend_from_slice(&data[..data.len().min(512)]);
            }
            received += data.len();
        }
    }
    let head = String::from_utf8_lossy(&head);
    assert!(
        head.contains("<head><script src=\"/_sandport/runtime-links."),
        "{head}"
    );
    assert!(received > SIZE, "the whole page arrived: {received}");
    let peak = gw.peak_rss_kib();
    assert!(
        peak < 48 * 1024,
        "gateway peak RSS {peak} KiB for a 64 MiB page"
    );
}

/// A sandbox answering every request with the headers a hostile app would send to take over
/// the origin it is served on (catalogue 26, 27, 77, 83).
async fn hostile_headers_upstream() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut head = String::from(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 2\r\n\
         Service-Worker-Allowed: /\r\nClear-Site-Data: \"cookies\"\r\n\
         Access-Control-Allow-Origin: https://evil.test\r\n\
         Access-Control-Allow-Credentials: true\r\n\
         Access-Control-Expose-Headers: *\r\n\
         Strict-Transport-Security: max-age=1; includeSubDomains\r\n\
         Set-Cookie: id_token=evil; Path=/\r\nSet-Cookie: theme=dark; Path=/settings\r\n",
    );
    // the cookie bomb: 60 cookies of 4 KB
    for index in 0..60 {
        head.push_str(&format!("Set-Cookie: bomb{index}={}\r\n", "b".repeat(4000)));
    }
    head.push_str("\r\nhi");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let head = head.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let mut read = 0;
                while !buffer[..read].windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buffer[read..]).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => read += n,
                    }
                }
                let _ = stream.write_all(head.as_bytes()).await;
            });
        }
    });
    addr
}

fn all<'a>(reply: &'a crate::harness::Reply, name: &str) -> Vec<&'a str> {
    reply
        .headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect()
}

/// Catalogue 26, 27, 50, 77, 83: on the path form a sandbox answers on the app's own origin.
/// Headers that act on the whole origin are removed, cookies are scoped under the route (a
/// platform port) or refused (an app port, whose pages also run sandboxed), and the cookie
/// bomb is capped on both forms.
#[tokio::test]
async fn catalogue_26_27_50_77_83_path_form_responses_cannot_act_on_the_app_origin() {
    let upstream = hostile_headers_upstream().await;
    let port = upstream.port();
    let platform = gateway_with_system_ports(upstream, &[port], "").await;
    let apps = gateway(upstream, "").await;
    for (gw, app_port) in [(&platform, false), (&apps, true)] {
        let main = format!("sandport.test:{}", gw.addr.port());
        let reply = send(gw.addr, authed(&main, &format!("/runtime/{CID}/{port}/")))
            .await
            .unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        for name in [
            "service-worker-allowed",
            "clear-site-data",
            "strict-transport-security",
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-expose-headers",
        ] {
            assert!(!reply.headers.contains_key(name), "{name} passed");
        }
        let csp = all(&reply, "content-security-policy");
        let sandboxed = csp
            .iter()
            .any(|value| value.starts_with("sandbox ") && !value.contains("allow-same-origin"));
        assert_eq!(sandboxed, app_port, "{csp:?}");
        let cookies = all(&reply, "set-cookie");
        if app_port {
            assert!(cookies.is_empty(), "{cookies:?}");
        } else {
            assert_eq!(cookies.len(), 32, "the bomb is capped");
            assert_eq!(
                cookies[0],
                format!("theme=dark; Path=/runtime/{CID}/{port}/settings; SameSite=Strict")
            );
            assert!(cookies
                .iter()
                .all(|c| c.contains(&format!("Path=/runtime/{CID}/{port}/"))));
        }
    }
    // the host form is its own origin: the headers are the app's business, the bomb is capped
    let host = format!("{port}-{CID}.runtime.sandport.test:{}", apps.addr.port());
    let reply = send(apps.addr, authed(&host, "/")).await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(reply.header("service-worker-allowed"), Some("/"));
    let cookies = all(&reply, "set-cookie");
    assert_eq!(cookies.len(), 32, "the bomb is capped");
    assert_eq!(cookies[0], "theme=dark; Path=/settings; SameSite=Strict");
    assert!(
        apps.metric("sandport_sandbox_cookies_dropped_total", "")
            .await
            >= 29.0
    );
}

/// Catalogue 104: a gzip bomb labelled `text/html` (32 MiB of one byte in about 32 KiB) from
/// the app is decoded only up to `max_decoded_bytes`: the client gets a cut-off response, not
/// the bomb, the cut is counted, and the gateway's memory stays small.
#[tokio::test]
async fn catalogue_104_a_decompression_bomb_is_cut_off_at_the_decode_limit() {
    let limit = 1024 * 1024;
    let mut plain = b"<!doctype html><html><head></head><body>".to_vec();
    plain.resize(32 * 1024 * 1024, b'a');
    let bomb = compress("gzip", &plain).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let bomb = bomb.clone();
            tokio::spawn(async move {
                let mut buffer = vec![0u8; 8192];
                let _ = stream.read(&mut buffer).await;
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Encoding: gzip\r\n\
                     Content-Length: {}\r\nConnection: close\r\n\r\n",
                    bomb.len()
                );
                let _ = stream.write_all(head.as_bytes()).await;
                let _ = stream.write_all(&bomb).await;
            });
        }
    });
    let gw = gateway(app, &format!("[rewrite]\nmax_decoded_bytes = {limit}\n")).await;
    let mut stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let request = format!(
        "GET / HTTP/1.1\r\nhost: sandport.test:{}\r\nauthorization: Bearer {TOKEN}\r\n\
         connection: close\r\n\r\n",
        gw.addr.port()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        stream.read_to_end(&mut raw),
    )
    .await
    .expect("the cut-off response ends");
    assert!(
        raw.starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&raw[..64.min(raw.len())])
    );
    assert!(
        raw.len() < 2 * limit,
        "{} bytes reached the client",
        raw.len()
    );
    assert!(
        !raw.ends_with(b"0\r\n\r\n"),
        "the cut-off body looked complete"
    );
    let cut = gw
        .metric(
            "sandport_rewrite_skipped_total",
            "reason=\"decoded_too_large\"",
        )
        .await;
    assert_eq!(cut, 1.0);
    let peak = gw.peak_rss_kib();
    assert!(peak < 100 * 1024, "peak RSS {peak} KiB");
}
