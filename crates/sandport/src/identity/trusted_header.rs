//! Trusted-header mode: believe `X-Cognito-User-Id` only from trusted peers that also know
//! the shared secret (when one is configured).

use std::net::IpAddr;

use ipnet::IpNet;

use super::{
    Principal, Secret, UserId, EMAIL_HEADER, EMAIL_VERIFIED_HEADER, ORIGIN_VERIFY_HEADER,
    USER_HEADER,
};

/// Which peers' identity headers are believed.
#[derive(Debug)]
pub struct HeaderRule {
    pub trusted_proxies: Vec<IpNet>,
    pub shared_secret: Option<Secret>,
}

impl HeaderRule {
    pub fn is_trusted_peer(&self, peer: IpAddr) -> bool {
        let peer = canonical(peer);
        self.trusted_proxies.iter().any(|net| net.contains(&peer))
    }

    pub(super) fn authenticate(
        &self,
        headers: &http::HeaderMap,
        peer: IpAddr,
    ) -> Option<Principal> {
        if !self.is_trusted_peer(peer) {
            return None;
        }
        if let Some(secret) = &self.shared_secret {
            let presented = single(headers, ORIGIN_VERIFY_HEADER)?;
            if !secret.matches(presented.as_bytes()) {
                return None;
            }
        }
        let user_id = UserId::parse(single(headers, USER_HEADER)?).ok()?;
        Some(Principal {
            user_id,
            email: single(headers, EMAIL_HEADER).map(str::to_owned),
            email_verified: single(headers, EMAIL_VERIFIED_HEADER).map(|v| v == "true"),
        })
    }
}

/// The header's value when it appears exactly once and is text; a repeated identity header
/// is ambiguous and counts as absent.
fn single<'a>(headers: &'a http::HeaderMap, name: &str) -> Option<&'a str> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()
}

/// IPv4-mapped IPv6 peers (dual-stack sockets) compare as IPv4.
fn canonical(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        IpAddr::V4(_) => peer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(secret: Option<&str>) -> HeaderRule {
        HeaderRule {
            trusted_proxies: vec!["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()],
            shared_secret: secret.map(|s| Secret::new(s.into())),
        }
    }

    fn headers(pairs: &[(&str, &str)]) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        headers
    }

    #[test]
    fn believed_only_from_trusted_peers_with_the_secret() {
        let trusted: IpAddr = "10.1.2.3".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        let outsider: IpAddr = "192.0.2.1".parse().unwrap();
        let user = [
            ("x-cognito-user-id", "alice"),
            ("x-cognito-email", "a@example.com"),
        ];
        let open = rule(None);
        let principal = open.authenticate(&headers(&user), trusted).unwrap();
        assert_eq!(principal.user_id, "alice");
        assert_eq!(principal.email.as_deref(), Some("a@example.com"));
        assert!(open.authenticate(&headers(&user), mapped).is_some());
        assert!(open.authenticate(&headers(&user), outsider).is_none());

        let locked = rule(Some("edge-secret"));
        assert!(locked.authenticate(&headers(&user), trusted).is_none());
        let mut with_secret = user.to_vec();
        with_secret.push(("x-origin-verify", "edge-secret"));
        assert!(locked
            .authenticate(&headers(&with_secret), trusted)
            .is_some());
        with_secret.pop();
        with_secret.push(("x-origin-verify", "edge-secreT"));
        assert!(locked
            .authenticate(&headers(&with_secret), trusted)
            .is_none());
    }

    #[test]
    fn ambiguous_or_malformed_ids_are_refused() {
        let peer: IpAddr = "10.0.0.1".parse().unwrap();
        let r = rule(None);
        for bad in [
            headers(&[("x-cognito-user-id", "a"), ("x-cognito-user-id", "b")]),
            headers(&[("x-cognito-user-id", "")]),
            headers(&[("x-cognito-user-id", "a b")]),
            headers(&[("x-cognito-user-id", &"a".repeat(300))]),
            headers(&[("x-cognito-user-id", "anonymous")]),
            headers(&[("x-cognito-user-id", "null")]),
            headers(&[]),
        ] {
            assert!(r.authenticate(&bad, peer).is_none(), "{bad:?}");
        }
    }
}
