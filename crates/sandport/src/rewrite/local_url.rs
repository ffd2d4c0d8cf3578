//! `http://localhost:{port}/…` URLs, as sandbox apps and the agent hand them out, mapped to the
//! runtime host of that port. Pure.

use crate::routing::ConversationId;

/// Hosts that mean "this sandbox" when a sandbox app names them.
const LOCAL_HOSTS: &[&str] = &["localhost", "127.0.0.1", "[::1]", "host.docker.internal"];

/// How runtime URLs are built for one conversation.
#[derive(Debug, Clone)]
pub struct RuntimeUrls {
    /// What browsers use to reach sandport.
    pub scheme: crate::routing::Scheme,
    pub runtime_domain: String,
    /// The port browsers use to reach sandport, when it is not the scheme's default.
    pub public_port: Option<u16>,
    pub conversation: ConversationId,
}

impl RuntimeUrls {
    /// The runtime origin of `port`: `{scheme}://{port}-{conversation}.{runtime_domain}[:public]`.
    pub fn origin(&self, port: u16) -> String {
        crate::routing::build_runtime_origin(
            self.scheme,
            &self.runtime_domain,
            self.public_port,
            &self.conversation,
            port,
        )
    }

    /// Rewrites an absolute `http(s)://{local host}:{port}{rest}` URL to the runtime host of
    /// that port; anything else (relative URLs, other hosts, no explicit port) is `None`.
    pub fn rewrite(&self, url: &str) -> Option<String> {
        let (scheme, rest) = url.split_once("://")?;
        if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
            return None;
        }
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        let (host, port) = authority.rsplit_once(':')?;
        if !LOCAL_HOSTS
            .iter()
            .any(|local| local.eq_ignore_ascii_case(host))
        {
            return None;
        }
        let port = crate::routing::parse_port(port)?;
        let tail = if tail.is_empty() { "/" } else { tail };
        Some(format!("{}{tail}", self.origin(port)))
    }

    /// Rewrites the URL inside a `Refresh` header value (`5; url=http://localhost:5000/`).
    pub fn rewrite_refresh(&self, value: &str) -> Option<String> {
        let lower = value.to_ascii_lowercase();
        let start = lower.find("url=")? + 4;
        let url = value[start..].trim().trim_matches(['\'', '"']);
        let rewritten = self.rewrite(url)?;
        Some(format!("{}{rewritten}", &value[..start]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CID: &str = "7c15e423fbd44f8f8bf483a481daa4d9";

    fn check(public_port: Option<u16>, input: &str, expected: Option<&str>) {
        let urls = RuntimeUrls {
            scheme: crate::routing::Scheme::Https,
            runtime_domain: "runtime.example.com".into(),
            public_port,
            conversation: ConversationId::parse(CID).unwrap(),
        };
        let expected = expected.map(|e| e.replace("{cid}", CID));
        assert_eq!(urls.rewrite(input), expected, "{input}");
    }

    #[test]
    fn table() {
        let base = "https://5000-{cid}.runtime.example.com";
        check(
            None,
            "http://localhost:5000/a?b=1#c",
            Some(&format!("{base}/a?b=1#c")),
        );
        check(None, "http://localhost:5000", Some(&format!("{base}/")));
        check(None, "http://127.0.0.1:5000/x", Some(&format!("{base}/x")));
        check(None, "http://[::1]:5000/x", Some(&format!("{base}/x")));
        check(
            None,
            "https://host.docker.internal:5000/x",
            Some(&format!("{base}/x")),
        );
        check(None, "HTTP://LOCALHOST:5000/x", Some(&format!("{base}/x")));
        check(
            Some(8080),
            "http://localhost:5000/x",
            Some("https://5000-{cid}.runtime.example.com:8080/x"),
        );
        check(None, "http://localhost/x", None);
        check(None, "http://localhost:0/x", None);
        check(None, "http://localhost:99999/x", None);
        check(None, "http://example.com:5000/x", None);
        check(None, "http://localhost.evil.test:5000/x", None);
        check(None, "/relative", None);
        check(None, "ftp://localhost:21/", None);
    }

    #[test]
    fn refresh_values() {
        let urls = RuntimeUrls {
            scheme: crate::routing::Scheme::Http,
            runtime_domain: "runtime.localhost".into(),
            public_port: Some(8080),
            conversation: ConversationId::parse(CID).unwrap(),
        };
        assert_eq!(
            urls.rewrite_refresh("5; url=http://localhost:3000/next")
                .unwrap(),
            format!("5; url=http://3000-{CID}.runtime.localhost:8080/next")
        );
        assert_eq!(urls.rewrite_refresh("5"), None);
        assert_eq!(urls.rewrite_refresh("0; URL=/local"), None);
    }
}
