//! `sandport routes` and `sandport explain`: what discovery sees, and what sandport would do
//! with a URL, without sending traffic.

use std::fmt::Write as _;

use crate::config::{DiscoveryBackend, FileConfig};
use crate::discovery::{self, Event, Table};
use crate::error::ProxyError;
use crate::identity::Principal;
use crate::routing::{self, ConversationId, RuntimeTarget, Target};
use crate::{app, authz};

/// Reads the sandboxes once from the configured backend.
pub async fn load_table(config: &FileConfig) -> anyhow::Result<Table> {
    let sandboxes = match config.discovery.backend {
        DiscoveryBackend::Static => {
            let store = discovery::Store::new(std::time::Duration::from_secs(1));
            discovery::fixed::load(&store, &config.discovery.sandboxes);
            return Ok(Table::default().apply(Event::Restarted(
                store
                    .snapshot()
                    .sandboxes()
                    .iter()
                    .map(|s| (**s).clone())
                    .collect(),
            )));
        }
        DiscoveryBackend::Docker => {
            let docker_config = app::docker_config(config);
            let docker = discovery::docker::connect(&docker_config).await?;
            discovery::docker::list(&docker, &docker_config, None).await?
        }
    };
    Ok(Table::default().apply(Event::Restarted(sandboxes)))
}

/// A table of every sandbox, one line each; a conversation whose containers name different
/// owners is marked `CONTESTED` (routed to nobody) and listed again at the end.
pub fn format_routes(table: &Table) -> String {
    let contested = table.contested();
    let mut out = format!(
        "{:<32}  {:<16}  {:<24}  {:<15}  {:<20}  {}\n",
        "CONVERSATION", "OWNER", "CONTAINER", "ADDRESS", "PORTS", "STATE"
    );
    for sandbox in &table.sandboxes() {
        let state = if contested.contains(&sandbox.conversation) {
            "CONTESTED"
        } else {
            sandbox.state.as_str()
        };
        let _ = writeln!(
            out,
            "{:<32}  {:<16}  {:<24}  {:<15}  {:<20}  {state}",
            sandbox.conversation,
            sandbox.owner.as_deref().unwrap_or("(none)"),
            sandbox.name,
            sandbox
                .address
                .map_or_else(|| "-".to_owned(), |a| a.to_string()),
            ports_column(&sandbox.ports),
        );
    }
    if !contested.is_empty() {
        let ids: Vec<&str> = contested.iter().map(ConversationId::as_str).collect();
        let _ = writeln!(
            out,
            "\ncontested (containers of different owners; routed to nobody): {}",
            ids.join(", ")
        );
    }
    out
}

/// `public->private` for published ports, `private` otherwise; `-` for none.
fn ports_column(ports: &[discovery::PortMapping]) -> String {
    if ports.is_empty() {
        return "-".to_owned();
    }
    let ports: Vec<String> = ports
        .iter()
        .map(|p| match p.public {
            Some(public) => format!("{public}->{}", p.private),
            None => p.private.to_string(),
        })
        .collect();
    ports.join(",")
}

/// Explains the routing decision for `url` as `user` would get it.
pub fn explain(
    config: &FileConfig,
    table: &Table,
    url: &str,
    user: &str,
) -> anyhow::Result<String> {
    let uri: http::Uri = url.parse()?;
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("the URL has no host"))?;
    let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
    let routing_config = routing::Config {
        runtime_domain: config.routing.effective_runtime_domain(),
    };
    let mut out = String::new();
    let decision = match routing::parse(&routing_config, &host.to_ascii_lowercase(), path_and_query)
    {
        Err(error) => Err(ProxyError::from(error)),
        Ok(Target::App) => {
            let _ = writeln!(out, "route:     app");
            let _ = writeln!(out, "upstream:  {}{path_and_query}", config.app.upstream);
            return Ok(out);
        }
        Ok(Target::Runtime(target)) => {
            let _ = writeln!(out, "route:     runtime ({} form)", target.form.as_str());
            let _ = writeln!(out, "conversation: {}", target.conversation);
            let _ = writeln!(out, "port:      {} (requested)", target.port);
            let _ = writeln!(out, "path:      {}", target.upstream_target);
            let user_id = crate::identity::UserId::parse(user)
                .map_err(|error| anyhow::anyhow!("--user {user:?}: {error}"))?;
            runtime_decision(config, table, &target, &Principal::user(user_id), &mut out)
        }
    };
    match decision {
        Ok(()) => {
            let _ = writeln!(
                out,
                "decision:  forward (the port is tried once when a request arrives)"
            );
        }
        Err(error) => {
            let (status, message) = error.status_and_message();
            let _ = writeln!(out, "decision:  refuse {} {message}", status.as_u16());
        }
    }
    Ok(out)
}

/// The gateway's decisions for a runtime target, in its order (lookup, ownership, address
/// policy), writing what each one learns to `out`.
fn runtime_decision(
    config: &FileConfig,
    table: &Table,
    target: &RuntimeTarget,
    principal: &Principal,
    out: &mut String,
) -> Result<(), ProxyError> {
    let conversation = || target.conversation.clone();
    let sandbox = table
        .lookup(&target.conversation)
        .map_err(|error| ProxyError::Lookup {
            conversation: conversation(),
            error,
        })?;
    let _ = writeln!(
        out,
        "container: {} ({})",
        sandbox.name, sandbox.container_id
    );
    let owner = sandbox.owner.as_deref().unwrap_or("(none)");
    let _ = writeln!(out, "owner:     {owner}");
    authz::check(principal, &sandbox).map_err(|denied| ProxyError::Denied {
        conversation: conversation(),
        denied,
    })?;
    let port = discovery::choose_port(&sandbox, target.port, &config.discovery.system_ports);
    if let Some(ip) = sandbox.address {
        let listeners = [&config.server.listen, &config.admin.listen]
            .into_iter()
            .filter_map(|listen| listen.parse().ok());
        app::address_policy(config, listeners)
            .check(std::net::SocketAddr::new(ip, port))
            .map_err(|refusal| ProxyError::AddressRefused {
                conversation: conversation(),
                refusal,
            })?;
    }
    let address = sandbox
        .address
        .map_or_else(|| "-".to_owned(), |a| a.to_string());
    let _ = writeln!(
        out,
        "upstream:  http://{address}:{port}{}",
        target.upstream_target
    );
    Ok(())
}
