//! Sending a request upstream over the shared, pooled client.

use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::body::{is_limit_error, Body};
use crate::error::{ProxyError, Upstream};

pub type Client = hyper_util::client::legacy::Client<HttpConnector, Body>;

/// Builds the upstream client: plain HTTP/1.1 to IP literals, pooled, with a connect timeout.
pub fn client(connect_timeout: Duration) -> Client {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(connect_timeout));
    connector.set_nodelay(true);
    connector.set_keepalive(Some(Duration::from_secs(60)));
    hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// Sends `request` and waits at most `idle_timeout` for the response headers.
pub async fn send(
    client: &Client,
    request: http::Request<Body>,
    idle_timeout: Duration,
    upstream: &Upstream,
) -> Result<http::Response<Incoming>, ProxyError> {
    let response = tokio::time::timeout(idle_timeout, client.request(request))
        .await
        .map_err(|_| ProxyError::UpstreamTimeout {
            upstream: upstream.clone(),
        })?;
    response.map_err(|error| {
        if is_limit_error(&error) {
            ProxyError::BodyTooLarge
        } else if error.is_connect() {
            ProxyError::UpstreamUnreachable {
                upstream: upstream.clone(),
                source: error.into(),
            }
        } else {
            ProxyError::UpstreamFailed {
                upstream: upstream.clone(),
                source: error.into(),
            }
        }
    })
}
