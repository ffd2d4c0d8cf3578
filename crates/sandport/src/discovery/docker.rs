//! The Docker backend: a label-filtered list, then the `/events` stream, plus a periodic
//! reconcile. The only code that talks to Docker.
//!
//! Every relevant event re-lists that one container (idempotent: replayed events are
//! harmless). A broken stream, a failed call, a non-2xx or unparsable answer all end the
//! session: the store is marked stale, and after a backoff a full resync starts over.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bollard::models::{ContainerSummary, EventMessage, EventMessageTypeEnum};
use bollard::query_parameters::EventsOptions;
use bollard::Docker;
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use super::labels::sandbox_from_summary;
use super::{Event, Sandbox, SandboxState, Store, CONVERSATION_LABEL};
use crate::metrics;

/// Docker backend settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub socket: PathBuf,
    pub network: Option<String>,
    pub reconcile_interval: Duration,
    pub timeout: Duration,
}

/// Why a Docker session ended.
#[derive(Debug, thiserror::Error)]
pub enum DockerError {
    #[error("docker API error: {0}")]
    Api(#[from] bollard::errors::Error),
    #[error("docker API call timed out")]
    Timeout,
    #[error("docker event stream ended")]
    StreamEnded,
    #[error("docker socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("docker API connection: {0}")]
    Http(#[from] hyper::Error),
    #[error("docker API answered {0}")]
    Status(http::StatusCode),
    #[error("docker container list larger than {LIST_LIMIT} bytes")]
    ListTooLarge,
    #[error("docker container list unreadable: {0}")]
    BadList(String),
}

impl DockerError {
    /// The `reason` label of `sandport_docker_failures_total`.
    pub fn reason(&self) -> &'static str {
        match self {
            DockerError::Api(_) => "api",
            DockerError::Timeout => "timeout",
            DockerError::StreamEnded => "stream_ended",
            DockerError::Io(_) | DockerError::Http(_) => "connection",
            DockerError::Status(_) => "status",
            DockerError::ListTooLarge => "list_too_large",
            DockerError::BadList(_) => "bad_list",
        }
    }
}

/// The largest container list read (catalogue 95): a bigger or endless answer ends the
/// session instead of being read whole, and the previous snapshot serves until it is stale.
pub const LIST_LIMIT: usize = 16 * 1024 * 1024;

/// Connects and negotiates the API version (bollard's default is newer than many engines).
pub async fn connect(config: &Config) -> Result<Docker, DockerError> {
    let socket = config.socket.to_string_lossy();
    let docker = Docker::connect_with_socket(
        &socket,
        config.timeout.as_secs().max(1),
        bollard::API_DEFAULT_VERSION,
    )?;
    metrics::docker_call("version");
    bounded(config.timeout, docker.negotiate_version()).await
}

/// Lists sandboxes: all of them, or the one container `only`.
pub async fn list(
    docker: &Docker,
    config: &Config,
    only: Option<&str>,
) -> Result<Vec<Sandbox>, DockerError> {
    let mut filters = HashMap::from([("label".to_owned(), vec![CONVERSATION_LABEL.to_owned()])]);
    if let Some(id) = only {
        filters.insert("id".to_owned(), vec![id.to_owned()]);
    }
    metrics::docker_call("list");
    let summaries = tokio::time::timeout(config.timeout, list_raw(docker, config, &filters))
        .await
        .map_err(|_| DockerError::Timeout)??;
    Ok(summaries
        .iter()
        .filter_map(
            |summary| match sandbox_from_summary(summary, config.network.as_deref()) {
                Ok(sandbox) => Some(sandbox),
                Err(reason) => {
                    tracing::debug!(container = ?summary.id, %reason, "container ignored");
                    None
                }
            },
        )
        .filter(|sandbox| only.is_none_or(|id| sandbox.container_id.starts_with(id)))
        .collect())
}

/// `GET /containers/json` on the socket, with the body read to at most [`LIST_LIMIT`] bytes
/// (bollard reads a list whole, however large).
async fn list_raw(
    docker: &Docker,
    config: &Config,
    filters: &HashMap<String, Vec<String>>,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let uri = containers_uri(docker, filters)?;
    let response = get_on_socket(&config.socket, uri).await?;
    read_list(response).await
}

/// The container list's URI: stopped containers included, at the negotiated API version.
fn containers_uri(
    docker: &Docker,
    filters: &HashMap<String, Vec<String>>,
) -> Result<String, DockerError> {
    let filters =
        serde_json::to_string(filters).map_err(|e| DockerError::BadList(e.to_string()))?;
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("all", "true")
        .append_pair("filters", &filters)
        .finish();
    Ok(format!(
        "/v{}/containers/json?{query}",
        docker.client_version()
    ))
}

/// One `GET` on a fresh connection to the Docker socket.
async fn get_on_socket(
    socket: &std::path::Path,
    uri: String,
) -> Result<http::Response<hyper::body::Incoming>, DockerError> {
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    let request = http::Request::get(uri)
        .header(http::header::HOST, "docker")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| DockerError::BadList(e.to_string()))?;
    Ok(sender.send_request(request).await?)
}

/// Parses a container list answer, reading at most [`LIST_LIMIT`] bytes of it.
async fn read_list(
    response: http::Response<hyper::body::Incoming>,
) -> Result<Vec<ContainerSummary>, DockerError> {
    use http_body_util::BodyExt;
    if !response.status().is_success() {
        return Err(DockerError::Status(response.status()));
    }
    let body = http_body_util::Limited::new(response.into_body(), LIST_LIMIT)
        .collect()
        .await
        .map_err(
            |error| match error.downcast::<http_body_util::LengthLimitError>() {
                Ok(_) => DockerError::ListTooLarge,
                Err(error) => DockerError::BadList(error.to_string()),
            },
        )?
        .to_bytes();
    serde_json::from_slice(&body).map_err(|e| DockerError::BadList(e.to_string()))
}

/// Runs the backend until `cancel` fires, keeping `store` in sync.
pub async fn run(config: Config, store: Arc<Store>, cancel: CancellationToken) {
    let mut backoff = Duration::from_millis(500);
    let mut cause = "start";
    loop {
        let session = Session {
            config: &config,
            store: &store,
            proven: std::sync::Mutex::new(HashMap::new()),
        };
        match session.run(cause, &cancel).await {
            Ok(()) => return,
            Err(error) => session_failed(&config, &store, &error),
        }
        cause = "reconnect";
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(jitter(backoff)) => {}
        }
        backoff = next_backoff(backoff, &store);
    }
}

/// Counts and logs a failed session, and marks the table stale so it stops serving once the
/// grace period is over.
fn session_failed(config: &Config, store: &Store, error: &DockerError) {
    ::metrics::counter!(metrics::DOCKER_FAILURES, "reason" => error.reason()).increment(1);
    store.mark_stale(Instant::now());
    if store.is_synced() {
        tracing::warn!(%error, "lost track of Docker; resyncing");
    } else {
        tracing::warn!(%error, socket = %config.socket.display(), "Docker unreachable");
    }
}

/// Doubles the backoff up to 30 s, and starts over while the table is still usable (the
/// failure was brief, so reconnecting quickly is worth it).
fn next_backoff(backoff: Duration, store: &Store) -> Duration {
    if store.is_usable(Instant::now()) {
        Duration::from_millis(500)
    } else {
        (backoff * 2).min(Duration::from_secs(30))
    }
}

struct Session<'a> {
    config: &'a Config,
    store: &'a Store,
    /// States an event proved (die, pause, unpause), by container: Docker's list view lags
    /// behind its events, so a re-list never overrides them; a later `start` or `restart`
    /// (or `destroy`) clears the entry (catalogue 88).
    proven: std::sync::Mutex<HashMap<String, SandboxState>>,
}

impl Session<'_> {
    async fn run(
        &self,
        cause: &'static str,
        cancel: &CancellationToken,
    ) -> Result<(), DockerError> {
        let docker = connect(self.config).await?;
        // Subscribe from just before the list, so nothing between the two is missed.
        let since = unix_now().saturating_sub(1);
        self.resync(&docker, cause).await?;
        metrics::docker_call("events");
        let mut events = docker.events(Some(events_options(since)));
        let mut reconcile = tokio::time::interval(self.config.reconcile_interval);
        reconcile.tick().await;
        let mut rechecks = Rechecks::default();
        loop {
            let recheck_at = rechecks.due();
            tokio::select! {
                () = cancel.cancelled() => return Ok(()),
                event = events.next() => match event {
                    Some(Ok(event)) => self.handle(&docker, event, &mut rechecks).await?,
                    Some(Err(error)) => return Err(error.into()),
                    None => return Err(DockerError::StreamEnded),
                },
                _ = reconcile.tick() => self.resync(&docker, "reconcile").await?,
                () = tokio::time::sleep_until(recheck_at.into()), if !rechecks.is_empty() => {
                    self.recheck(&docker, &mut rechecks).await?;
                }
            }
        }
    }

    /// Re-lists the containers whose list view may have lagged their events.
    async fn recheck(&self, docker: &Docker, rechecks: &mut Rechecks) -> Result<(), DockerError> {
        for container_id in rechecks.take() {
            ::metrics::counter!(metrics::DISCOVERY_EVENTS, "action" => "recheck").increment(1);
            self.refresh(docker, &container_id).await?;
        }
        Ok(())
    }

    async fn resync(&self, docker: &Docker, cause: &'static str) -> Result<(), DockerError> {
        ::metrics::counter!(metrics::DISCOVERY_RESYNCS, "cause" => cause).increment(1);
        let sandboxes = self.overridden(list(docker, self.config, None).await?);
        tracing::info!(sandboxes = sandboxes.len(), cause, "sandbox table synced");
        self.store.apply(Event::Restarted(sandboxes));
        Ok(())
    }

    /// Applies one event. Docker emits an event before its list view always reflects it, so
    /// state changes the event itself proves (pause, unpause, die, destroy) are applied from
    /// the event; everything else re-lists the container, and is re-listed once more shortly
    /// after in case the view lagged.
    async fn handle(
        &self,
        docker: &Docker,
        event: EventMessage,
        rechecks: &mut Rechecks,
    ) -> Result<(), DockerError> {
        let Some(container_id) = self.relevant_container(&event) else {
            return Ok(());
        };
        let action = event.action.as_deref().unwrap_or("");
        let label = action_label(action);
        ::metrics::counter!(metrics::DISCOVERY_EVENTS, "action" => label).increment(1);
        let proven = proven_state(label);
        self.remember_proven(label, proven, &container_id);
        if label == "destroy" {
            self.store.apply(Event::Removed { container_id });
            return Ok(());
        }
        if let Some(state) = proven {
            if self.apply_proven(action, &container_id, state) {
                return Ok(());
            }
        }
        self.refresh(docker, &container_id).await?;
        rechecks.schedule(container_id);
        Ok(())
    }

    /// Records a state the event proved, or forgets it once the container starts over.
    fn remember_proven(&self, label: &str, proven: Option<SandboxState>, container_id: &str) {
        let mut proven_states = self.proven.lock().unwrap_or_else(PoisonError::into_inner);
        match (label, proven) {
            (_, Some(state)) => {
                proven_states.insert(container_id.to_owned(), state);
            }
            ("start" | "restart" | "destroy", None) => {
                proven_states.remove(container_id);
            }
            _ => {}
        }
    }

    /// Sets a known sandbox to the state an event proved, without asking Docker; `false` when
    /// the container is not in the table yet (it has to be listed).
    fn apply_proven(&self, action: &str, container_id: &str, state: SandboxState) -> bool {
        let Some(known) = self.store.snapshot().get(container_id) else {
            return false;
        };
        let mut sandbox = (*known).clone();
        sandbox.state = state;
        tracing::debug!(action, container = %container_id, ?state, "discovery event");
        self.store.apply(Event::Upserted(sandbox));
        true
    }

    /// Re-lists one container and stores what Docker says about it.
    async fn refresh(&self, docker: &Docker, container_id: &str) -> Result<(), DockerError> {
        let mut found = self.overridden(list(docker, self.config, Some(container_id)).await?);
        let update = match found.pop() {
            Some(sandbox) => Event::Upserted(sandbox),
            None => Event::Removed {
                container_id: container_id.to_owned(),
            },
        };
        tracing::debug!(?update, "discovery refresh");
        self.store.apply(update);
        Ok(())
    }

    /// A list result with the event-proven states put back over Docker's lagging view.
    fn overridden(&self, mut sandboxes: Vec<Sandbox>) -> Vec<Sandbox> {
        let proven = self.proven.lock().unwrap_or_else(PoisonError::into_inner);
        for sandbox in &mut sandboxes {
            if let Some(&state) = proven.get(&sandbox.container_id) {
                if state != sandbox.state {
                    tracing::debug!(container = %sandbox.container_id, listed = ?sandbox.state, ?state, "list lags an event; keeping the event's state");
                    sandbox.state = state;
                }
            }
        }
        sandboxes
    }

    /// The container an event is about, when it may change the table.
    fn relevant_container(&self, event: &EventMessage) -> Option<String> {
        let action = event.action.as_deref()?;
        if action.starts_with("exec_") {
            return None;
        }
        let actor = event.actor.as_ref()?;
        let attributes = actor.attributes.as_ref();
        match event.typ? {
            EventMessageTypeEnum::CONTAINER => {
                let labelled = attributes.is_some_and(|a| a.contains_key(CONVERSATION_LABEL));
                let known = actor
                    .id
                    .as_deref()
                    .is_some_and(|id| self.store.snapshot().contains(id));
                (labelled || known).then(|| actor.id.clone()).flatten()
            }
            EventMessageTypeEnum::NETWORK => {
                let container = attributes?.get("container")?;
                self.store
                    .snapshot()
                    .contains(container)
                    .then(|| container.clone())
            }
            _ => None,
        }
    }
}

/// Containers to re-list once more shortly after an event (Docker's list view can lag
/// behind its events by a few milliseconds).
#[derive(Debug, Default)]
struct Rechecks {
    due: Option<Instant>,
    containers: std::collections::BTreeSet<String>,
}

impl Rechecks {
    const DELAY: Duration = Duration::from_millis(250);

    fn schedule(&mut self, container_id: String) {
        self.due.get_or_insert_with(|| Instant::now() + Self::DELAY);
        self.containers.insert(container_id);
    }

    fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }

    fn due(&self) -> Instant {
        self.due.unwrap_or_else(|| Instant::now() + Self::DELAY)
    }

    fn take(&mut self) -> Vec<String> {
        self.due = None;
        std::mem::take(&mut self.containers).into_iter().collect()
    }
}

/// Folds Docker's open-ended action strings into a small label set.
fn action_label(action: &str) -> &'static str {
    match action.split(':').next().unwrap_or("") {
        "create" => "create",
        "start" => "start",
        "restart" => "restart",
        "die" => "die",
        "stop" => "stop",
        "kill" => "kill",
        "destroy" => "destroy",
        "pause" => "pause",
        "unpause" => "unpause",
        "rename" => "rename",
        "connect" => "connect",
        "disconnect" => "disconnect",
        "health_status" => "health_status",
        _ => "other",
    }
}

/// The state an event proves by itself; Docker's list view may not show it yet.
fn proven_state(label: &str) -> Option<SandboxState> {
    match label {
        "pause" => Some(SandboxState::Paused),
        "unpause" => Some(SandboxState::Running),
        "die" => Some(SandboxState::Stopped),
        _ => None,
    }
}

/// The event subscription: container and network events from `since` on.
fn events_options(since: u64) -> EventsOptions {
    EventsOptions {
        since: Some(since.to_string()),
        until: None,
        filters: Some(HashMap::from([(
            "type".to_owned(),
            vec!["container".to_owned(), "network".to_owned()],
        )])),
    }
}

async fn bounded<T>(
    limit: Duration,
    call: impl std::future::Future<Output = Result<T, bollard::errors::Error>>,
) -> Result<T, DockerError> {
    tokio::time::timeout(limit, call)
        .await
        .map_err(|_| DockerError::Timeout)?
        .map_err(DockerError::from)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

fn jitter(base: Duration) -> Duration {
    let spread = u64::try_from(base.as_millis() / 4).unwrap_or(0).max(1);
    base + Duration::from_millis(rand::random_range(0..spread))
}
