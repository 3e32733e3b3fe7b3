//! Where the server may send the requests it makes for users (model webhooks, which
//! also carry alarm notifications).
//!
//! A URL is chosen by a user, and the request leaves from the server's own network,
//! so without a rule the server would reach what the user cannot: its own loopback
//! services, cloud metadata endpoints (link-local), and private networks; and each
//! delivery's outcome would tell the user which of those ports answer. Such addresses
//! are refused unless the operator lists them in `ATELIER_OUTBOUND_ALLOW` (host names,
//! addresses or CIDR networks).
//!
//! The rule is checked twice: when a URL is saved (a 422 naming the address, for the
//! user's benefit) and on the address each delivery actually connects to (the server's
//! HTTP client resolves names through [`OutboundPolicy::refusal`]), so a name that
//! resolves elsewhere later (DNS rebinding) gains nothing.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use crate::{CoreError, CoreResult};

/// How long saving a URL waits for its name to resolve before accepting it unchecked
/// (each delivery checks the addresses it connects to anyway).
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(3);

/// The operator's exceptions to the rule, parsed from `ATELIER_OUTBOUND_ALLOW`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    /// Lower-case host names allowed whatever they resolve to.
    hosts: Vec<String>,
    /// Networks allowed: an address and a prefix length.
    nets: Vec<(IpAddr, u8)>,
}

impl OutboundPolicy {
    /// Parses entries such as `hooks.internal`, `10.1.2.3`, `10.0.0.0/8` or `fd00::/8`.
    pub fn parse(entries: &[String]) -> CoreResult<OutboundPolicy> {
        let mut policy = OutboundPolicy::default();
        for entry in entries.iter().map(|e| e.trim()).filter(|e| !e.is_empty()) {
            let invalid = || {
                CoreError::invalid(
                    "ATELIER_OUTBOUND_ALLOW",
                    format!("{entry:?} is not a host name, an IP address or a CIDR network such as 10.0.0.0/8"),
                )
            };
            if let Some((addr, prefix)) = entry.split_once('/') {
                let addr: IpAddr = addr.parse().map_err(|_| invalid())?;
                let prefix: u8 = prefix.parse().map_err(|_| invalid())?;
                let max = if addr.is_ipv4() { 32 } else { 128 };
                if prefix > max {
                    return Err(invalid());
                }
                policy.nets.push((addr, prefix));
            } else if let Ok(addr) = entry.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
                policy.nets.push((addr, if addr.is_ipv4() { 32 } else { 128 }));
            } else if is_host_name(entry) {
                policy.hosts.push(entry.to_ascii_lowercase());
            } else {
                return Err(invalid());
            }
        }
        Ok(policy)
    }

    /// Why a connection to `ip` for a URL naming `host` is refused, or `None` when it
    /// may go ahead: public addresses always may; internal ones when the operator
    /// allowed the host name or a network holding the address.
    pub fn refusal(&self, host: &str, ip: IpAddr) -> Option<&'static str> {
        let kind = internal_kind(ip)?;
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if self.hosts.contains(&host) || self.nets.iter().any(|(net, prefix)| contains(*net, *prefix, ip)) {
            return None;
        }
        Some(kind)
    }

    /// Checks a URL a user saves: its host, or the addresses its name resolves to now,
    /// must not be internal. `field` names the input in the 422. A name that does not
    /// resolve yet is accepted: deliveries check the address they connect to.
    pub async fn check_url(&self, field: &'static str, url: &str) -> CoreResult<()> {
        let Some((host, port)) = host_and_port(url) else {
            return Err(CoreError::invalid(field, format!("{field} must be an http:// or https:// URL with a host")));
        };
        let refuse = |ip: IpAddr, kind: &str| {
            CoreError::invalid(
                field,
                format!(
                    "{field} {host} is the {kind} address {ip}: the server does not send requests to internal \
                     addresses unless an operator allows them (ATELIER_OUTBOUND_ALLOW)"
                ),
            )
        };
        if let Ok(ip) = host.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>() {
            return match self.refusal(&host, ip) {
                Some(kind) => Err(refuse(ip, kind)),
                None => Ok(()),
            };
        }
        // A name whose last label is numeric would be read as an IPv4 address in
        // another notation (`127.1`, `0x7f000001`) by some parsers and as a name by
        // others; there is no such public name, so it is refused rather than guessed.
        if !is_host_name(&host) || ends_in_a_number(&host) {
            return Err(CoreError::invalid(
                field,
                format!("{field} has a host that is neither a name nor an IP address: {host:?}"),
            ));
        }
        let lookup = tokio::net::lookup_host((host.as_str(), port));
        let Ok(Ok(addrs)) = tokio::time::timeout(RESOLVE_TIMEOUT, lookup).await else {
            return Ok(());
        };
        for addr in addrs {
            if let Some(kind) = self.refusal(&host, addr.ip()) {
                return Err(refuse(addr.ip(), kind));
            }
        }
        Ok(())
    }
}

/// What kind of internal address `ip` is, or `None` for a public one. IPv4 addresses
/// written as IPv6 (`::ffff:127.0.0.1`) are judged as the IPv4 address they are.
pub fn internal_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => v4_kind(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => v4_kind(v4),
            None => v6_kind(v6),
        },
    }
}

fn v4_kind(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() || a == 0 {
        "unspecified"
    } else if ip.is_private() {
        "private"
    } else if ip.is_link_local() {
        "link-local"
    } else if a == 100 && (64..128).contains(&b) {
        "carrier-grade NAT"
    } else if ip.is_multicast() {
        "multicast"
    } else if ip.is_broadcast() || a >= 240 {
        "reserved"
    } else {
        return None;
    })
}

fn v6_kind(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_loopback() {
        "loopback"
    } else if ip.is_unspecified() {
        "unspecified"
    } else if first & 0xfe00 == 0xfc00 {
        "unique-local"
    } else if first & 0xffc0 == 0xfe80 {
        "link-local"
    } else if ip.is_multicast() {
        "multicast"
    } else if let Some(v4) = ip.to_ipv4().filter(|_| ip.segments()[..6].iter().all(|s| *s == 0)) {
        // The deprecated IPv4-compatible form `::a.b.c.d`.
        return v4_kind(v4);
    } else {
        return None;
    })
}

/// Whether the network `net`/`prefix` holds `ip` (IPv4-mapped IPv6 addresses are
/// compared as IPv4).
fn contains(net: IpAddr, prefix: u8, ip: IpAddr) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

/// Letters, digits, dots and hyphens: a host name with nothing a URL parser could
/// decode into something else.
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        && !host.starts_with('.')
}

/// The URL standard's test for a host that is an IPv4 address in some notation: its
/// last label is decimal digits or `0x` and hex digits.
fn ends_in_a_number(host: &str) -> bool {
    let last = host.trim_end_matches('.').rsplit('.').next().unwrap_or_default();
    let hex = last.strip_prefix("0x").or_else(|| last.strip_prefix("0X"));
    (!last.is_empty() && last.chars().all(|c| c.is_ascii_digit()))
        || hex.is_some_and(|h| h.chars().all(|c| c.is_ascii_hexdigit()))
}

/// The host (lower-case, IPv6 in brackets) and port of an http(s) URL.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let (scheme, rest) = url.trim().split_once("://")?;
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => 80,
        "https" => 443,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map(|(_, a)| a).unwrap_or(authority);
    let (host, port) = if let Some(end) = authority.find(']').filter(|_| authority.starts_with('[')) {
        let (host, after) = authority.split_at(end + 1);
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(p) if !p.is_empty() => p.parse().ok()?,
        _ => default_port,
    };
    (!host.is_empty()).then(|| (host.trim_end_matches('.').to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("address")
    }

    #[test]
    fn internal_addresses_are_classified_and_public_ones_pass() {
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
        ] {
            assert_eq!(internal_kind(ip(addr)), Some(kind), "{addr}");
        }
        for addr in ["8.8.8.8", "172.32.0.1", "100.128.0.1", "192.0.2.1", "2001:db8::1", "::ffff:8.8.8.8"] {
            assert_eq!(internal_kind(ip(addr)), None, "{addr}");
        }
    }

    #[test]
    fn the_operator_allows_hosts_and_networks() {
        let policy =
            OutboundPolicy::parse(&["hooks.internal".into(), "10.0.0.0/8".into(), "::1".into()]).expect("parse");
        assert_eq!(policy.refusal("hooks.internal", ip("192.168.1.5")), None);
        assert_eq!(policy.refusal("x", ip("10.200.1.1")), None);
        assert_eq!(policy.refusal("x", ip("::1")), None);
        assert_eq!(policy.refusal("x", ip("127.0.0.1")), Some("loopback"));
        assert_eq!(policy.refusal("x", ip("192.168.1.5")), Some("private"));
        assert!(OutboundPolicy::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(OutboundPolicy::parse(&["not a host".into()]).is_err());
    }

    #[test]
    fn hosts_and_ports_are_read_from_urls() {
        assert_eq!(host_and_port("http://a.example/x"), Some(("a.example".into(), 80)));
        assert_eq!(host_and_port("https://u:p@A.example:8443?q"), Some(("a.example".into(), 8443)));
        assert_eq!(host_and_port("http://[::1]:9/h"), Some(("[::1]".into(), 9)));
        assert_eq!(host_and_port("ftp://a.example"), None);
    }

    #[tokio::test]
    async fn saving_a_url_refuses_internal_literals_and_other_notations() {
        let policy = OutboundPolicy::default();
        for url in [
            "http://127.0.0.1:9/hook",
            "http://[::1]/",
            "http://169.254.169.254/latest",
            "http://127.1/",
            "http://0x7f000001/",
        ] {
            assert!(policy.check_url("url", url).await.is_err(), "{url}");
        }
        assert!(policy.check_url("url", "https://192.0.2.10/hook").await.is_ok());
        let allowed = OutboundPolicy::parse(&["127.0.0.1".into()]).expect("parse");
        assert!(allowed.check_url("url", "http://127.0.0.1:9/hook").await.is_ok());
        assert!(ends_in_a_number("10.1") && ends_in_a_number("a.0x7f") && !ends_in_a_number("cafe.de"));
    }
}
