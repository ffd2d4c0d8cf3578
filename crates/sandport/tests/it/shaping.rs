//! Response shaping through the real binary: sandbox headers and cookies on both route forms,
//! the browser script injected into the app's pages (plain and compressed), served once.

use http::StatusCode;
use sandport_testkit::sandbox_server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{get, send, Gateway, TOKEN};

const CID: &str = "0123456789abcdef0123456789abcdef";

async fn gateway(app: std::net::SocketAddr, extra: &str) -> Gateway {
    let config = format!(
        "[routing]\nbase_domain = \"sandport.test\"\n[app]\nupstream = \"http://{app}\"\n\
         [identity]\ntoken = \"{TOKEN}\"\nuser_id = \"alice\"\n\
         [discovery]\nbackend = \"static\"\n\
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
        assert_eq!(
            set_cookies,
            ["theme=dark; Path=/; SameSite=Strict"],
            "{host}"
        );
        assert_eq!(reply.header("x-content-type-options"), Some("nosniff"));
        assert_eq!(
            reply.header("referrer-policy"),
            Some("strict-origin-when-cross-origin")
        );
        assert_eq!(
            reply.header("content-security-policy"),
            Some(&*format!(
                "frame-ancestors 'self' http://sandport.test:{public}"
            ))
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
