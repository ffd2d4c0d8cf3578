//! A real browser end to end: headless Chromium, driven over WebDriver by `chromedriver`, opens
//! a conversation page of a stand-in app through sandport. The page's own code uses
//! `localhost:5000` URLs (`fetch`, `WebSocket`, `window.open`); the injected script sends each
//! one through the gateway to the port of a real labelled sandbox container.
//!
//! Chromium and chromedriver are required (Debian packages `chromium` and `chromium-driver`):
//! without them the test fails, it does not skip.
//!
//! The base domain is `sandport.localhost`, not the bare `localhost`. Chromium resolves every
//! `*.localhost` name to loopback, and treats `sandport.localhost` as a registrable domain:
//! the app (`sandport.localhost`) and its runtime hosts (`*.runtime.sandport.localhost`) are
//! one site, so the page's WebSocket to a runtime host is a same-site request that carries the
//! host's `SameSite=Lax` token cookie. With the bare `localhost`, the app and
//! `*.runtime.localhost` are two sites, and Chromium sends no cookie at all (`Lax`, or even
//! `SameSite=None; Secure`, as third-party cookies are blocked) with such a WebSocket or fetch.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use bytes::Bytes;
use fantoccini::{Client, ClientBuilder, Locator};
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use sandport_testkit::docker::{random_conversation_id, Container, SandboxImage, TestNetwork};
use serde_json::{json, Value};

use crate::harness::{Gateway, TOKEN};

const BASE_DOMAIN: &str = "sandport.localhost";
/// Time allowed for the whole browser part (Chromium's start included).
const BROWSER_LIMIT: Duration = Duration::from_secs(45);
/// Time allowed for one thing the page does (a fetch, a WebSocket exchange, a new window).
const STEP_LIMIT: Duration = Duration::from_secs(10);
/// The message the page sends on its WebSocket (written out in the page's code).
const WS_MESSAGE: &str = "hello through sandport";

/// The stand-in app's conversation page. Its inline code runs after the injected script (which
/// sandport puts at the start of `<head>`) and reports into `window.results` and `#results`.
const CONVERSATION_PAGE: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>conversation</title></head>
<body>
<pre id="results">{}</pre>
<button id="open" type="button">Open the app on port 5000</button>
<script>
window.results = {};
function report(key, value) {
  window.results[key] = value;
  document.getElementById('results').textContent = JSON.stringify(window.results);
}
fetch('http://localhost:5000/api/x')
  .then(async (response) => report('fetch', { url: response.url, status: response.status, body: await response.text() }))
  .catch((error) => report('fetch', { error: String(error) }));
const ws = new WebSocket('ws://localhost:5000/__sandbox/ws-headers');
const socket = { url: ws.url, messages: [] };
ws.onmessage = (event) => {
  socket.messages.push(String(event.data));
  if (socket.messages.length === 1) {
    ws.send('hello through sandport');
  } else {
    ws.close();
    report('websocket', socket);
  }
};
ws.onclose = (event) => {
  if (!window.results.websocket) report('websocket', { ...socket, error: 'closed with ' + event.code });
};
document.getElementById('open').addEventListener('click', () => {
  report('open', { returned_window: window.open('http://localhost:5000/') !== null });
});
</script>
</body></html>
"#;

#[tokio::test]
async fn a_conversation_page_reaches_its_sandbox_from_a_real_browser() {
    // Fail before any setup when the browser is missing.
    let chromium = require_program("chromium");
    let chromedriver_bin = require_program("chromedriver");

    let image = SandboxImage::build().expect("sandbox image (is Docker running?)");
    let network = TestNetwork::create().unwrap();
    let conversation = random_conversation_id();
    let container = Container::builder(&image)
        .network(&network)
        .labels([("conversation_id", &*conversation), ("user_id", "alice")])
        .sandbox_ports(&[5000, 8000, 8001])
        .run()
        .unwrap();
    container
        .wait_http(&network, 5000, Duration::from_secs(10))
        .await
        .unwrap();
    let app = StandInApp::spawn().await;
    let gateway = Gateway::start(&format!(
        "[routing]\nbase_domain = \"{BASE_DOMAIN}\"\n\
         [app]\nupstream = \"http://{}\"\n\
         [identity]\nmode = \"token\"\nuser_id = \"alice\"\ntoken = \"{TOKEN}\"\n\
         [discovery]\nbackend = \"docker\"\nnetwork = \"{}\"\nmax_staleness_secs = 2\n\
         [proxy]\nconnect_timeout_ms = 1000\n",
        app.addr,
        network.name()
    ));
    gateway.wait_ready().await;

    let driver = Chromedriver::start(&chromedriver_bin);
    let client = driver.session(&chromium).await;
    let page = Page {
        port: gateway.addr.port(),
        conversation: &conversation,
        container: container.short_id(),
    };
    let outcome = tokio::time::timeout(BROWSER_LIMIT, scenario(&client, &page)).await;
    // Ends the session whatever happened: chromedriver closes Chromium.
    let _ = tokio::time::timeout(Duration::from_secs(10), client.close()).await;
    match outcome {
        Err(_) => panic!("the browser scenario took longer than {BROWSER_LIMIT:?}"),
        Ok(Err(error)) => panic!("{error:#}"),
        Ok(Ok(())) => {}
    }

    // The app served its pages and nothing meant for the sandbox.
    let seen = app.paths();
    assert!(
        seen.contains(&format!("/conversations/{conversation}")),
        "{seen:?}"
    );
    assert!(
        seen.iter()
            .all(|path| !path.contains("/api/") && !path.contains("__sandbox")),
        "sandbox traffic reached the app: {seen:?}"
    );
}

/// What the scenario needs to know about the world.
struct Page<'a> {
    port: u16,
    conversation: &'a str,
    /// The sandbox container's short id: its hostname, which its echo reports.
    container: &'a str,
}

impl Page<'_> {
    fn app_origin(&self) -> String {
        format!("http://{BASE_DOMAIN}:{}", self.port)
    }

    fn runtime_host(&self) -> String {
        format!(
            "5000-{}.runtime.{BASE_DOMAIN}:{}",
            self.conversation, self.port
        )
    }

    /// Checks an echo of the sandbox server: it came from this conversation's container, on
    /// port 5000, for `target`, with `host`, and without sandport's token.
    fn check_echo(&self, what: &str, echo: &Value, target: &str, host: &str) -> anyhow::Result<()> {
        ensure!(
            echo["hostname"] == self.container,
            "{what} reached {} instead of container {}: {echo}",
            echo["hostname"],
            self.container
        );
        ensure!(echo["port"] == 5000, "{what}: wrong port: {echo}");
        ensure!(echo["target"] == target, "{what}: wrong target: {echo}");
        let headers = echo["headers"].to_string();
        ensure!(
            headers.contains(&json!(["host", host]).to_string()),
            "{what}: not sent to {host}: {headers}"
        );
        ensure!(
            !headers.contains(TOKEN),
            "{what}: sandport's token reached the sandbox: {headers}"
        );
        Ok(())
    }
}

async fn scenario(client: &Client, page: &Page<'_>) -> anyhow::Result<()> {
    let app = page.app_origin();
    let runtime = page.runtime_host();

    // The user opens the URL sandport prints, once: the token becomes an HttpOnly cookie on
    // the base domain, which also covers the runtime hosts under it, so the page's WebSocket
    // (a subresource request that cannot follow a login redirect) carries it too.
    client
        .goto(&format!("{app}/?sandport_token={TOKEN}"))
        .await?;
    let url = client.current_url().await?;
    ensure!(
        url.as_str() == format!("{app}/"),
        "the token URL did not redirect to {app}/: {url}"
    );
    let _ = &runtime;

    let page_url = format!("{app}/conversations/{}", page.conversation);
    client.goto(&page_url).await?;

    // The injected script is in the DOM exactly once, first in <head>, and ran.
    let script = client
        .execute(
            "const tags = [...document.querySelectorAll('script[src]')]
                 .filter((s) => s.getAttribute('src').startsWith('/_sandport/runtime-links.'));
             return {
                 count: tags.length,
                 first_in_head: document.head.firstElementChild === tags[0],
                 runtime_domain: tags[0] && tags[0].dataset.runtimeDomain,
                 installed: Boolean(window.__sandportRuntimeLinks),
             };",
            vec![],
        )
        .await?;
    ensure!(
        script
            == json!({
                "count": 1,
                "first_in_head": true,
                "runtime_domain": format!("runtime.{BASE_DOMAIN}"),
                "installed": true,
            }),
        "injected script: {script}"
    );

    // fetch('http://localhost:5000/api/x'): agent traffic, sent on the path form of the app
    // origin, answered by the container.
    let results = wait_for_results(client, &["fetch", "websocket"]).await?;
    let fetched = &results["fetch"];
    ensure!(
        fetched["url"] == format!("{app}/runtime/{}/5000/api/x", page.conversation),
        "fetch did not go through the path form: {fetched}"
    );
    ensure!(fetched["status"] == 200, "fetch: {fetched}");
    let echo: Value = serde_json::from_str(fetched["body"].as_str().unwrap_or_default())
        .with_context(|| format!("fetch body is not the echo: {fetched}"))?;
    page.check_echo(
        "fetch",
        &echo,
        "/api/x",
        &format!("{BASE_DOMAIN}:{}", page.port),
    )?;

    // new WebSocket('ws://localhost:5000/__sandbox/ws-headers'): on the runtime host of 5000.
    let socket = &results["websocket"];
    ensure!(
        socket["url"] == format!("ws://{runtime}/__sandbox/ws-headers"),
        "WebSocket not opened on the runtime host: {socket}"
    );
    let messages: Vec<&str> = socket["messages"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    ensure!(
        messages.len() == 2 && socket.get("error").is_none(),
        "WebSocket: {socket}"
    );
    let upgrade: Value = serde_json::from_str(messages[0])
        .with_context(|| format!("first WebSocket message is not the echo: {socket}"))?;
    page.check_echo("WebSocket", &upgrade, "/__sandbox/ws-headers", &runtime)?;
    ensure!(
        messages[1] == WS_MESSAGE,
        "WebSocket did not echo: {socket}"
    );

    // window.open('http://localhost:5000/') on a click: a new window on the runtime host.
    let opener = client.window().await?;
    client.find(Locator::Css("#open")).await?.click().await?;
    let opened = wait_for_results(client, &["open"]).await?;
    ensure!(
        opened["open"]["returned_window"] == true,
        "window.open: {opened}"
    );
    let deadline = Instant::now() + STEP_LIMIT;
    let popup = loop {
        let windows = client.windows().await?;
        if let Some(window) = windows.into_iter().find(|w| *w != opener) {
            break window;
        }
        ensure!(Instant::now() < deadline, "window.open opened no window");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    client.switch_to_window(popup).await?;
    let deadline = Instant::now() + STEP_LIMIT;
    let (url, body) = loop {
        let url = client.current_url().await?;
        let body = client
            .execute(
                "return document.body ? document.body.innerText : ''",
                vec![],
            )
            .await?;
        if let Ok(echo) = serde_json::from_str::<Value>(body.as_str().unwrap_or_default()) {
            break (url, echo);
        }
        ensure!(
            Instant::now() < deadline,
            "the new window did not load the sandbox: {url} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    ensure!(
        url.as_str() == format!("http://{runtime}/"),
        "window.open did not go to the runtime host: {url}"
    );
    page.check_echo("window.open", &body, "/", &runtime)?;
    Ok(())
}

/// Polls `window.results` until every key in `keys` is there.
async fn wait_for_results(client: &Client, keys: &[&str]) -> anyhow::Result<Value> {
    let deadline = Instant::now() + STEP_LIMIT;
    loop {
        let results = client.execute("return window.results", vec![]).await?;
        if keys.iter().all(|key| results.get(key).is_some()) {
            return Ok(results);
        }
        ensure!(
            Instant::now() < deadline,
            "the page did not report {keys:?} within {STEP_LIMIT:?}: {results}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `name` on `PATH`; panics with the Debian packages to install when it is not there.
fn require_program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(name))
        .find(|path| path.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: the browser test needs Chromium and chromedriver \
                 (Debian: `apt-get install chromium chromium-driver`)"
            )
        })
}

/// A `chromedriver` in its own process group (with the Chromium it starts), ended on drop.
struct Chromedriver {
    child: Child,
    url: String,
    profile: tempfile::TempDir,
}

impl Chromedriver {
    fn start(binary: &Path) -> Chromedriver {
        // Port 0: chromedriver picks a free port and says which on stdout.
        let mut child = Command::new(binary)
            .arg("--port=0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let stdout = child.stdout.take().unwrap();
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Reads the port line, then keeps draining so chromedriver never blocks on stdout.
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                if let Some(rest) = line.split("started successfully on port ").nth(1) {
                    let _ = port_tx.send(rest.trim_end_matches('.').trim().parse::<u16>());
                }
            }
        });
        let mut driver = Chromedriver {
            child,
            url: String::new(),
            profile: tempfile::tempdir().unwrap(),
        };
        let port = match port_rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(port)) => port,
            Ok(Err(error)) => panic!("chromedriver announced an unreadable port: {error}"),
            Err(_) => match driver.child.try_wait() {
                Ok(Some(status)) => panic!("chromedriver exited with {status}"),
                _ => panic!("chromedriver did not announce its port within 10 s"),
            },
        };
        driver.url = format!("http://127.0.0.1:{port}");
        driver
    }

    /// Starts headless Chromium with a fresh profile.
    async fn session(&self, chromium: &Path) -> Client {
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": chromium,
                "args": [
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--no-first-run",
                    "--disable-quic",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            }),
        );
        capabilities.insert(
            "timeouts".into(),
            json!({ "pageLoad": 10_000, "script": 5_000 }),
        );
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        tokio::time::timeout(
            Duration::from_secs(20),
            ClientBuilder::new(connector)
                .capabilities(capabilities)
                .connect(&self.url),
        )
        .await
        .expect("Chromium did not start within 20 s")
        .unwrap_or_else(|error| panic!("cannot start headless Chromium: {error}"))
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        // The whole group: chromedriver and every Chromium process it started, including those
        // of a session a failed test left open. The profile directory is removed after that.
        let group = format!("-{}", self.child.id());
        let signal = |name: &str| {
            Command::new("kill")
                .args([name, "--", &group])
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success())
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let _ = self.child.try_wait();
            if !signal("-0") {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal("-KILL");
        let _ = self.child.wait();
    }
}

/// The stand-in agent app: `/` and `/conversations/{id}` pages, 404 otherwise. Records the
/// paths it was asked for; stops on drop.
struct StandInApp {
    addr: SocketAddr,
    paths: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl StandInApp {
    async fn spawn() -> StandInApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let paths = Arc::new(Mutex::new(Vec::new()));
        let log = paths.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let log = log.clone();
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let response = StandInApp::answer(&request);
                    if let Ok(mut paths) = log.lock() {
                        paths.push(request.uri().path().to_owned());
                    }
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        StandInApp { addr, paths, task }
    }

    fn answer(request: &Request<Incoming>) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let conversation = path
            .strip_prefix("/conversations/")
            .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()));
        let (status, page) = if path == "/" {
            (
                StatusCode::OK,
                "<!doctype html><html><head><title>app</title></head><body>home</body></html>",
            )
        } else if conversation.is_some() {
            (StatusCode::OK, CONVERSATION_PAGE)
        } else {
            (StatusCode::NOT_FOUND, "not found")
        };
        let mut response = Response::new(Full::new(Bytes::from_static(page.as_bytes())));
        *response.status_mut() = status;
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/html; charset=utf-8"),
        );
        response
    }

    fn paths(&self) -> Vec<String> {
        self.paths.lock().map(|p| p.clone()).unwrap_or_default()
    }
}

impl Drop for StandInApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}
