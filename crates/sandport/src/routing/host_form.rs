//! The host form: `{port}-{conversation}.{runtime_domain}`.

use super::{parse_port, ConversationId};

/// Parses a host name (without its `:port`, compared case-insensitively for the domain part)
/// into the conversation and port it names, if it is a runtime host of `runtime_domain`.
///
/// Host names on the wire are ASCII (internationalised names arrive as punycode), so anything
/// else is not a runtime host. Hosts also come percent-decoded from queries (`?host=`), so the
/// split below uses `get` and can never land inside a multi-byte character.
pub fn parse_runtime_host(runtime_domain: &str, host: &str) -> Option<(ConversationId, u16)> {
    if !host.is_ascii() {
        return None;
    }
    let host = host.strip_suffix('.').unwrap_or(host);
    let label_end = host.len().checked_sub(runtime_domain.len() + 1)?;
    let label = host.get(..label_end)?;
    let domain = host.get(label_end..)?.strip_prefix('.')?;
    if !domain.eq_ignore_ascii_case(runtime_domain) {
        return None;
    }
    let (port, conversation) = label.split_once('-')?;
    Some((ConversationId::parse(conversation)?, parse_port(port)?))
}
