//! A fault-injecting stand-in for the Docker Engine socket, for the few tests that need a
//! fault the real engine cannot produce on demand (a 500 from the list, a list that hangs, a
//! 100 MB or endless list, an event stream that drops). It is used in addition to the tests
//! against the real engine, never instead of them.
//!
//! It answers `/_ping` and `/version` like a real engine of API [`API_VERSION`] (so bollard's
//! version negotiation succeeds and the call under test is really reached), and breaks only
//! the call it is told to: the container list ([`ListAnswer`]) or the event stream
//! ([`EventsAnswer`]). Every request is counted by path, so a test can wait until the call
//! under test was made.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// The API version the fake engine reports (an engine of Docker 20.10).
pub const API_VERSION: &str = "1.41";

/// What `GET /containers/json` answers.
#[derive(Debug, Clone)]
pub enum ListAnswer {
    /// 200 with this JSON body (e.g. `"[]"`).
    Json(String),
    /// This status with a Docker-style JSON error body.
    Status(u16),
    /// Never answers (the connection stays open, nothing is sent).
    Hang,
    /// 200 with a syntactically valid JSON array of about `bytes` bytes, streamed.
    Huge(usize),
    /// 200 with a JSON array that never ends, streamed until the client goes away.
    Endless,
}

/// What `GET /events` answers.
#[derive(Debug, Clone, Copy)]
pub enum EventsAnswer {
    /// A stream that stays open and quiet, like an idle engine's.
    Quiet,
    /// 200, then the stream ends at once (the engine dropped it).
    Drop,
}

type Body = UnsyncBoxBody<Bytes, Infallible>;

/// A fake engine on a Unix socket in its own temporary directory; stops when dropped.
pub struct FakeDocker {
    socket: PathBuf,
    calls: Arc<Mutex<HashMap<String, usize>>>,
    task: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl FakeDocker {
    /// Starts serving on the current Tokio runtime.
    pub fn start(list: ListAnswer, events: EventsAnswer) -> std::io::Result<FakeDocker> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("docker.sock");
        let listener = tokio::net::UnixListener::bind(&socket)?;
        let calls = Arc::new(Mutex::new(HashMap::new()));
        let counted = Arc::clone(&calls);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let list = list.clone();
                let calls = Arc::clone(&counted);
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let list = list.clone();
                        let calls = Arc::clone(&calls);
                        async move {
                            let hang = matches!(list, ListAnswer::Hang)
                                && endpoint(request.uri().path()) == "/containers/json";
                            let response = answer(request, &list, events, &calls);
                            if hang {
                                // The fault under test: the list never answers.
                                std::future::pending::<()>().await;
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(FakeDocker {
            socket,
            calls,
            task,
            _dir: dir,
        })
    }

    /// The socket path, for sandport's `discovery.docker_socket`.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// How many requests reached an endpoint (`"/version"`, `"/containers/json"`, `"/events"`,
    /// `"/_ping"`), whatever the API version prefix.
    pub fn calls(&self, endpoint: &str) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(endpoint)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for FakeDocker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The path without a `/v1.xx` prefix.
fn endpoint(path: &str) -> &str {
    match path.strip_prefix("/v") {
        Some(rest) if rest.starts_with(|c: char| c.is_ascii_digit()) => {
            rest.find('/').map_or(path, |slash| &rest[slash..])
        }
        _ => path,
    }
}

fn answer(
    request: Request<Incoming>,
    list: &ListAnswer,
    events: EventsAnswer,
    calls: &Mutex<HashMap<String, usize>>,
) -> Response<Body> {
    let endpoint = endpoint(request.uri().path()).to_owned();
    *calls
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .entry(endpoint.clone())
        .or_default() += 1;
    match endpoint.as_str() {
        "/_ping" => respond(StatusCode::OK, "text/plain", full("OK")),
        "/version" => respond(StatusCode::OK, "application/json", full(&version_json())),
        "/containers/json" => list_answer(list),
        "/events" => match events {
            EventsAnswer::Quiet => respond(
                StatusCode::OK,
                "application/json",
                StreamBody::new(futures_util::stream::pending::<
                    Result<Frame<Bytes>, Infallible>,
                >())
                .boxed_unsync(),
            ),
            EventsAnswer::Drop => respond(StatusCode::OK, "application/json", full("")),
        },
        _ => error(StatusCode::NOT_FOUND, "page not found"),
    }
}

fn version_json() -> String {
    serde_json::json!({
        "Version": "20.10.24",
        "ApiVersion": API_VERSION,
        "MinAPIVersion": "1.12",
        "Os": "linux",
        "Arch": "amd64",
        "KernelVersion": "6.1.0",
        "GoVersion": "go1.20",
        "GitCommit": "fake",
    })
    .to_string()
}

fn list_answer(list: &ListAnswer) -> Response<Body> {
    match list {
        ListAnswer::Json(body) => respond(StatusCode::OK, "application/json", full(body)),
        ListAnswer::Status(code) => error(
            StatusCode::from_u16(*code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "injected fault",
        ),
        // Handled before: the response never comes.
        ListAnswer::Hang => error(StatusCode::INTERNAL_SERVER_ERROR, "unreachable"),
        ListAnswer::Huge(bytes) => {
            respond(StatusCode::OK, "application/json", json_array(Some(*bytes)))
        }
        ListAnswer::Endless => respond(StatusCode::OK, "application/json", json_array(None)),
    }
}

/// A streamed JSON array of container summaries, `limit` bytes long or endless.
fn json_array(limit: Option<usize>) -> Body {
    const ELEMENT: &str = r#"{"Id":"0000000000000000000000000000000000000000000000000000000000000000","Names":["/filler"],"Labels":{"filler":"x"},"State":"exited","Created":1},"#;
    let chunk: Bytes = ELEMENT.repeat(64 * 1024 / ELEMENT.len()).into();
    let chunks = limit.map(|bytes| bytes / chunk.len() + 1);
    let opening = futures_util::stream::once(async { Bytes::from_static(b"[") });
    let middle = futures_util::stream::repeat(chunk);
    let closing = futures_util::stream::once(async { Bytes::from_static(b"{}]") });
    use futures_util::StreamExt;
    let frames: futures_util::stream::BoxStream<'static, Bytes> = match chunks {
        Some(count) => opening.chain(middle.take(count)).chain(closing).boxed(),
        None => opening.chain(middle).boxed(),
    };
    BodyExt::boxed_unsync(StreamBody::new(
        frames.map(|bytes| Ok::<_, Infallible>(Frame::data(bytes))),
    ))
}

fn full(text: &str) -> Body {
    Full::new(Bytes::from(text.to_owned())).boxed_unsync()
}

fn respond(status: StatusCode, content_type: &'static str, body: Body) -> Response<Body> {
    use hyper::header::HeaderValue;
    let mut response = Response::new(body);
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert("content-type", HeaderValue::from_static(content_type));
    headers.insert("api-version", HeaderValue::from_static(API_VERSION));
    headers.insert("docker-experimental", HeaderValue::from_static("false"));
    headers.insert("ostype", HeaderValue::from_static("linux"));
    response
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "message": message }).to_string();
    respond(status, "application/json", full(&body))
}
