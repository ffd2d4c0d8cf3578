//! The host form: `{port}-{conversation}.{runtime_domain}`.

use super::{parse_port, ConversationId};

/// Parses a host name (without its `:port`, compared case-insensitively for the domain part)
/// into the conversation and port it names, if it is a runtime host of `runtime_domain`.
pub fn parse_runtime_host(runtime_domain: &str, host: &str) -> Option<(ConversationId, u16)> {
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_end = host.len().checked_sub(runtime_domain.len() + 1)?;
    let (label, domain) = host.split_at(label_end);
    let domain = domain.strip_prefix('.')?;
    if !domain.eq_ignore_ascii_case(runtime_domain) {
        return None;
    }
    let (port, conversation) = label.split_once('-')?;
    Some((ConversationId::parse(conversation)?, parse_port(port)?))
}
