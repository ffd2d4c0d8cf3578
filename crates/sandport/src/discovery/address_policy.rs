//! Which upstream addresses a sandbox may be reached at (hardening catalogue 45 and 84).
//!
//! A sandbox's owner chooses the port in `/runtime/{id}/{port}/`, so the address must never
//! let them reach the gateway host itself. A container on the host network (which discovery
//! reports at 127.0.0.1) or one reporting a loopback, unspecified or link-local address would
//! otherwise hand its owner every service on the host's loopback: sandport's admin
//! `/metrics`, a Docker TCP port, the cloud metadata endpoint (169.254.169.254). Such
//! addresses are refused unless the operator allows them, and sandport's own listeners are
//! refused always.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why an upstream address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressRefusal {
    /// Loopback, unspecified, link-local, multicast or broadcast: the gateway host's own
    /// interfaces, not the container's.
    HostLocal,
    /// One of sandport's own listeners (the gateway or the admin port).
    OwnListener,
}

/// The rule, built once at start.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Whether host-local addresses are allowed: for the static backend (the operator wrote
    /// each address) or `discovery.allow_host_local_addresses`.
    pub allow_host_local: bool,
    /// sandport's own bound listeners, never an upstream.
    pub own_listeners: Vec<SocketAddr>,
}

impl AddressPolicy {
    pub fn check(&self, upstream: SocketAddr) -> Result<(), AddressRefusal> {
        let ip = canonical(upstream.ip());
        let local = is_host_local(ip);
        // A host-local address with a listener's port is that listener, whatever it is bound to.
        if self.own_listeners.iter().any(|listener| {
            listener.port() == upstream.port() && (local || canonical(listener.ip()) == ip)
        }) {
            return Err(AddressRefusal::OwnListener);
        }
        if local && !self.allow_host_local {
            return Err(AddressRefusal::HostLocal);
        }
        Ok(())
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is judged as the IPv4 address it maps.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn is_host_local(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_host_local_v4(v4),
        IpAddr::V6(v6) => is_host_local_v6(v6),
    }
}

fn is_host_local_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        // 0.0.0.0/8 reaches the host on Linux, not only 0.0.0.0
        || ip.octets()[0] == 0
}

fn is_host_local_v6(ip: Ipv6Addr) -> bool {
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        // fe80::/10
        || (ip.segments()[0] & 0xffc0) == 0xfe80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn docker_policy() -> AddressPolicy {
        AddressPolicy {
            allow_host_local: false,
            own_listeners: vec![addr("127.0.0.1:9090"), addr("0.0.0.0:8080")],
        }
    }

    #[test]
    fn container_addresses_are_allowed() {
        let policy = docker_policy();
        for ok in [
            "172.18.0.5:5000",
            "10.0.0.2:8000",
            "[fd00::5]:5000",
            "192.168.1.9:8080",
        ] {
            assert_eq!(policy.check(addr(ok)), Ok(()), "{ok}");
        }
    }

    #[test]
    fn host_local_addresses_are_refused_by_default() {
        let policy = docker_policy();
        for bad in [
            "127.0.0.1:5000",
            "127.1.2.3:22",
            "0.0.0.0:5000",
            "0.1.2.3:5000",
            "169.254.169.254:80",
            "255.255.255.255:80",
            "224.0.0.1:80",
            "[::1]:5000",
            "[::]:5000",
            "[fe80::1]:5000",
            "[::ffff:127.0.0.1]:5000",
            "[::ffff:169.254.169.254]:80",
        ] {
            assert_eq!(
                policy.check(addr(bad)),
                Err(AddressRefusal::HostLocal),
                "{bad}"
            );
        }
    }

    #[test]
    fn own_listeners_are_refused_even_when_host_local_is_allowed() {
        let policy = AddressPolicy {
            allow_host_local: true,
            ..docker_policy()
        };
        assert_eq!(policy.check(addr("127.0.0.1:5000")), Ok(()));
        for bad in [
            "127.0.0.1:9090",
            "[::ffff:127.0.0.1]:9090",
            "127.0.0.1:8080",
            "[::1]:8080",
            "0.0.0.0:9090",
        ] {
            assert_eq!(
                policy.check(addr(bad)),
                Err(AddressRefusal::OwnListener),
                "{bad}"
            );
        }
        // another host's port 9090 is not sandport's admin port
        assert_eq!(policy.check(addr("172.18.0.5:9090")), Ok(()));
    }
}
