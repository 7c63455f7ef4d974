//! Network safety rules: which outgoing webhook targets hookd may reach (SSRF
//! protection), which peers may send incoming webhooks (IP allowlists), and
//! how the client address is found behind trusted reverse proxies.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use reqwest::Url;

/// Longest accepted target URL, in bytes (before and after normalisation).
const MAX_URL_LEN: usize = 2048;
/// Save-time lookups run inside an API request, so they must not hold it up.
const SAVE_RESOLVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Delivery-time lookups run in the background and may wait a little longer.
const DELIVERY_RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors from URL, address and CIDR checks. Display texts are user-facing
/// sentences: they go into API error details as they are.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum NetError {
    #[error("url must be at most {MAX_URL_LEN} characters long")]
    UrlTooLong,
    #[error("url must be absolute, like https://example.com/webhook")]
    UrlRelative,
    #[error("url is not valid: {0}")]
    UrlInvalid(String),
    #[error("url must use http or https")]
    UrlScheme,
    #[error("url must not contain a username or password; send credentials in headers instead")]
    UrlUserinfo,
    #[error(
        "target address {addr} is not allowed ({reason}); an operator can allow it with HOOKD_ALLOWED_TARGET_CIDRS"
    )]
    TargetNotAllowed { addr: IpAddr, reason: &'static str },
    #[error("target host {0} could not be resolved")]
    Unresolvable(String),
    #[error("HOOKD_ALLOWED_TARGET_CIDRS: {0:?} is not an IP address or CIDR range")]
    InvalidTargetCidr(String),
    #[error("allowed_ips[{index}]: {entry:?} is not an IP address or CIDR range")]
    InvalidAllowlistEntry { index: usize, entry: String },
}

/// An outgoing webhook target: an absolute http or https URL with a host, no
/// userinfo, at most 2048 characters. Held in the `url` crate's normalised
/// form (lowercase scheme and host, `/` path when empty, numeric hosts such as
/// `http://2130706433/` rewritten to dotted IPv4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetUrl(Url);

impl TargetUrl {
    /// Parses and validates a target URL.
    pub fn parse(s: &str) -> Result<TargetUrl, NetError> {
        // Checked before parsing too, so huge inputs are not parsed at all.
        if s.len() > MAX_URL_LEN {
            return Err(NetError::UrlTooLong);
        }
        // reqwest re-exports only `Url`, not the parser's error kinds, so a
        // relative URL is recognised by it resolving against a base.
        let url = Url::parse(s).map_err(|e| {
            let base = Url::parse("http://base.invalid/").expect("constant URL is valid");
            match base.join(s) {
                Ok(_) => NetError::UrlRelative,
                Err(_) => NetError::UrlInvalid(e.to_string()),
            }
        })?;
        // The parser already refuses http(s) URLs without a host ("empty host").
        if !matches!(url.scheme(), "http" | "https") {
            return Err(NetError::UrlScheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(NetError::UrlUserinfo);
        }
        // Percent-encoding during normalisation can make the URL longer.
        if url.as_str().len() > MAX_URL_LEN {
            return Err(NetError::UrlTooLong);
        }
        Ok(TargetUrl(url))
    }

    /// The normalised URL text.
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// The host; IPv6 literals come without brackets (`::1`, not `[::1]`).
    pub fn host(&self) -> &str {
        let host = self.0.host_str().unwrap_or_default(); // http(s) URLs always have one
        host.strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host)
    }

    /// The port, or the scheme's default (80 for http, 443 for https).
    pub fn port(&self) -> u16 {
        // http and https always have a known default, so the fallback is never used.
        self.0.port_or_known_default().unwrap_or(80)
    }

    /// The host as an IP address when it is a literal. The parser rewrites
    /// every numeric IPv4 form to dotted decimal, so no domain parses as one.
    fn ip(&self) -> Option<IpAddr> {
        self.host().parse().ok()
    }

    /// `localhost` and `*.localhost` always mean this machine (RFC 6761), so
    /// they are answered without asking a resolver that might say otherwise.
    fn is_localhost(&self) -> bool {
        let host = self.host().trim_end_matches('.');
        host == "localhost" || host.ends_with(".localhost")
    }
}

const fn v4(a: u8, b: u8, c: u8, d: u8, prefix: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), prefix)
}

const fn v6(segments: [u16; 8], prefix: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), prefix)
}

/// IPv4 ranges outgoing deliveries may not reach; the first match names the
/// reason. Documentation and reserved ranges are unroutable on the internet,
/// so refusing them costs nothing and closes odd local set-ups.
const REFUSED_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 32), "unspecified"),
    (v4(0, 0, 0, 0, 8), "\"this network\", RFC 1122"),
    (v4(10, 0, 0, 0, 8), "private network, RFC 1918"),
    (v4(100, 64, 0, 0, 10), "carrier-grade NAT, RFC 6598"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (
        v4(169, 254, 0, 0, 16),
        "link-local, includes cloud metadata",
    ),
    (v4(172, 16, 0, 0, 12), "private network, RFC 1918"),
    (v4(192, 0, 0, 0, 24), "IETF protocol assignments, RFC 6890"),
    (v4(192, 0, 2, 0, 24), "documentation, RFC 5737"),
    (v4(192, 88, 99, 0, 24), "6to4 relay anycast, RFC 7526"),
    (v4(192, 168, 0, 0, 16), "private network, RFC 1918"),
    (v4(198, 18, 0, 0, 15), "benchmarking, RFC 2544"),
    (v4(198, 51, 100, 0, 24), "documentation, RFC 5737"),
    (v4(203, 0, 113, 0, 24), "documentation, RFC 5737"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved, RFC 1112"),
];

/// IPv6 ranges outgoing deliveries may not reach. Ranges that embed an IPv4
/// address are in [`EMBEDS_V4`] instead and judged by that address.
const REFUSED_V6: &[(Ipv6Net, &str)] = &[
    (v6([0; 8], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    // Deprecated IPv4-compatible addresses (::a.b.c.d); nothing routes them.
    (v6([0; 8], 96), "IPv4-compatible, deprecated"),
    (
        v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48),
        "local-use NAT64, RFC 8215",
    ),
    (
        v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64),
        "discard-only, RFC 6666",
    ),
    // Teredo hides the client's IPv4 address; the tunnel is no legitimate target.
    (
        v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32),
        "Teredo tunnel, RFC 4380",
    ),
    (
        v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32),
        "documentation, RFC 3849",
    ),
    (
        v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20),
        "documentation, RFC 9637",
    ),
    (
        v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7),
        "unique local, RFC 4193",
    ),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local, deprecated",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// IPv6 ranges that carry an IPv4 address, with the bit shift that brings it
/// to the low 32 bits. Each is judged as its IPv4 address, because traffic to
/// it ends up at that address (mapped sockets, NAT64 gateways, 6to4 relays).
const EMBEDS_V4: &[(Ipv6Net, u32)] = &[
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), 0), // IPv4-mapped ::ffff:a.b.c.d
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), 0), // IPv4-translated ::ffff:0:a.b.c.d, RFC 2765
    (v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96), 0), // NAT64 well-known prefix, RFC 6052
    (v6([0x2002, 0, 0, 0, 0, 0, 0, 0], 16), 80), // 6to4 2002:AABB:CCDD::/48, RFC 3056
];

/// The IPv4 address an IPv6 address stands for, if any.
fn embedded_v4(ip: IpAddr) -> Option<IpAddr> {
    let IpAddr::V6(ip) = ip else { return None };
    let (_, shift) = EMBEDS_V4.iter().find(|(net, _)| net.contains(&ip))?;
    // Truncating to the low 32 bits is the point here.
    Some(Ipv4Addr::from((u128::from(ip) >> shift) as u32).into())
}

/// Why an address is refused, or `None` if it is publicly routable.
fn refusal(ip: IpAddr) -> Option<&'static str> {
    if let Some(v4) = embedded_v4(ip) {
        return refusal(v4);
    }
    let reason = match ip {
        IpAddr::V4(ip) => REFUSED_V4.iter().find(|(n, _)| n.contains(&ip))?.1,
        IpAddr::V6(ip) => REFUSED_V6.iter().find(|(n, _)| n.contains(&ip))?.1,
    };
    Some(reason)
}

/// Parses `a.b.c.d`, `a.b.c.d/n`, `v6` or `v6/n`, dropping host bits, and
/// turns IPv4-mapped IPv6 ranges into IPv4 ranges so they match v4 peers.
fn parse_net(s: &str) -> Option<IpNet> {
    let net = match s.parse::<IpNet>() {
        Ok(net) => net.trunc(),
        Err(_) => IpNet::from(s.parse::<IpAddr>().ok()?),
    };
    Some(match net {
        IpNet::V6(n) if n.prefix_len() >= 96 => match n.addr().to_ipv4_mapped() {
            Some(ip) => Ipv4Net::new_assert(ip, n.prefix_len() - 96).into(),
            None => net,
        },
        net => net,
    })
}

/// Whether any range contains `ip` or its `alias` (the IPv4 address it
/// stands for, where the caller considers one).
fn nets_contain(nets: &[IpNet], ip: IpAddr, alias: Option<IpAddr>) -> bool {
    nets.iter()
        .any(|n| n.contains(&ip) || alias.is_some_and(|a| n.contains(&a)))
}

/// Peers are compared in canonical form only: a dual-stack socket reports an
/// IPv4 peer as `::ffff:a.b.c.d`, while NAT64 or 6to4 sources are distinct
/// IPv6 hosts and must not pass as the IPv4 address they embed.
fn peer_in(nets: &[IpNet], ip: IpAddr) -> bool {
    nets_contain(nets, ip, Some(ip.to_canonical()))
}

/// Which addresses outgoing deliveries may reach: every publicly routable
/// address, plus whatever the operator allowed explicitly.
#[derive(Clone, Debug, Default)]
pub struct TargetPolicy {
    allowed: Vec<IpNet>,
}

impl TargetPolicy {
    /// A policy that also lets deliveries reach the `allowed` ranges.
    pub fn new(allowed: Vec<IpNet>) -> Self {
        TargetPolicy { allowed }
    }

    /// Parses the operator setting `HOOKD_ALLOWED_TARGET_CIDRS`: CIDRs or
    /// single addresses separated by commas, whitespace and empty items ignored.
    pub fn parse_allowed(s: &str) -> Result<Vec<IpNet>, NetError> {
        s.split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| parse_net(item).ok_or_else(|| NetError::InvalidTargetCidr(item.into())))
            .collect()
    }

    /// Refuses loopback, private, link-local (cloud metadata), CGNAT,
    /// unspecified, broadcast, multicast, documentation, benchmarking and
    /// reserved addresses, v4 and v6; IPv6 forms embedding an IPv4 address
    /// (mapped, translated, NAT64, 6to4) are judged by that address. An address inside
    /// one of the allowed ranges always passes.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), NetError> {
        match refusal(ip) {
            // Traffic to an embedding address reaches the embedded IPv4
            // address, so allowing that address allows its IPv6 forms too.
            Some(reason) if !nets_contain(&self.allowed, ip, embedded_v4(ip)) => {
                Err(NetError::TargetNotAllowed { addr: ip, reason })
            }
            _ => Ok(()),
        }
    }

    /// Save-time check, by the rule delivery applies: an IP literal is checked; a name is
    /// resolved and refused only when none of its addresses passes (delivery connects only to
    /// those that do, so `localhost` with just `127.0.0.0/8` allowed is fine: ::1 is never
    /// used). A name that does not resolve (error or timeout) is accepted, because delivery
    /// resolves and checks it again.
    pub async fn check_target(&self, url: &TargetUrl) -> Result<(), NetError> {
        match resolve(url, SAVE_RESOLVE_TIMEOUT).await {
            Some(addrs) => self.passing(addrs).map(drop),
            None => Ok(()),
        }
    }

    /// Delivery-time check: resolves the target and returns the addresses
    /// that pass, so the connection can be pinned to one of them (a second
    /// lookup by the HTTP client could answer differently: DNS rebinding).
    pub async fn resolve_checked(&self, url: &TargetUrl) -> Result<Vec<SocketAddr>, NetError> {
        let addrs = resolve(url, DELIVERY_RESOLVE_TIMEOUT)
            .await
            .ok_or_else(|| NetError::Unresolvable(url.host().into()))?;
        self.passing(addrs)
    }

    /// The addresses that pass; the first refusal when none does.
    fn passing(&self, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, NetError> {
        let mut first_refusal = None;
        let passed: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.check_ip(a.ip()) {
                Ok(()) => true,
                Err(e) => {
                    first_refusal.get_or_insert(e);
                    false
                }
            })
            .collect();
        match first_refusal {
            Some(e) if passed.is_empty() => Err(e),
            _ => Ok(passed),
        }
    }
}

/// The socket addresses a target stands for; `None` if a name did not
/// resolve in time or resolved to nothing.
async fn resolve(url: &TargetUrl, timeout: Duration) -> Option<Vec<SocketAddr>> {
    let port = url.port();
    if let Some(ip) = url.ip() {
        return Some(vec![SocketAddr::new(ip, port)]);
    }
    if url.is_localhost() {
        let loopback = [
            IpAddr::from(Ipv4Addr::LOCALHOST),
            Ipv6Addr::LOCALHOST.into(),
        ];
        return Some(loopback.map(|ip| SocketAddr::new(ip, port)).to_vec());
    }
    let lookup = tokio::net::lookup_host((url.host(), port));
    let addrs: Vec<SocketAddr> = tokio::time::timeout(timeout, lookup)
        .await
        .ok()?
        .ok()?
        .collect();
    (!addrs.is_empty()).then_some(addrs)
}

/// Incoming webhook allowlist of addresses and CIDR ranges, v4 and v6.
/// An empty list allows everyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IpAllowlist(Vec<IpNet>);

impl IpAllowlist {
    /// Parses entries such as `192.168.1.100` (one host), `10.0.0.0/8`,
    /// `2001:db8::/32` or `::1`. Host bits are dropped, so `10.0.0.1/8` is
    /// stored as `10.0.0.0/8`; surrounding whitespace is ignored.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<IpAllowlist, NetError> {
        entries
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                let entry = entry.as_ref();
                parse_net(entry.trim()).ok_or_else(|| NetError::InvalidAllowlistEntry {
                    index,
                    entry: entry.into(),
                })
            })
            .collect::<Result<_, _>>()
            .map(IpAllowlist)
    }

    /// Whether `ip` may send; IPv4-mapped IPv6 peers (`::ffff:1.2.3.4`) match
    /// IPv4 entries.
    pub fn allows(&self, ip: IpAddr) -> bool {
        self.0.is_empty() || peer_in(&self.0, ip)
    }

    /// Whether the list is empty (everyone allowed).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Canonical text of each entry for API output: single hosts without a
    /// prefix length (`192.168.1.100`, `::1`), ranges as `10.0.0.0/8`.
    pub fn entries(&self) -> Vec<String> {
        self.0
            .iter()
            .map(|n| match n.prefix_len() == n.max_prefix_len() {
                true => n.addr().to_string(),
                false => n.to_string(),
            })
            .collect()
    }
}

/// The client address behind trusted reverse proxies. Without a trusted peer,
/// `X-Forwarded-For` is ignored (anyone can send it). Otherwise the header is
/// walked from the right, skipping trusted hops; the first untrusted address
/// is the client. A malformed entry stops the walk at the last good address.
/// Several `X-Forwarded-For` headers must be joined with `,` in arrival order.
pub fn client_ip(peer: IpAddr, forwarded_for: Option<&str>, trusted: &[IpNet]) -> IpAddr {
    let mut client = peer;
    if !peer_in(trusted, peer) {
        return client;
    }
    for hop in forwarded_for.into_iter().flat_map(|h| h.rsplit(',')) {
        let hop = hop.trim();
        // Some proxies append the port: `1.2.3.4:5678`, `[2001:db8::1]:443`.
        let Some(ip) = hop
            .parse::<IpAddr>()
            .ok()
            .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        else {
            break;
        };
        client = ip;
        if !peer_in(trusted, ip) {
            break;
        }
    }
    client
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn nets(s: &str) -> Vec<IpNet> {
        TargetPolicy::parse_allowed(s).unwrap()
    }

    #[test]
    fn refuses_every_special_range() {
        let policy = TargetPolicy::default();
        let refused = [
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "this network"),
            ("10.1.2.3", "private"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("100.127.255.254", "carrier-grade NAT"),
            ("127.0.0.1", "loopback"),
            ("127.255.255.255", "loopback"),
            ("169.254.169.254", "link-local"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.0.0.8", "IETF"),
            ("192.0.2.1", "documentation"),
            ("192.88.99.1", "6to4 relay"),
            ("192.168.1.1", "private"),
            ("198.18.0.1", "benchmarking"),
            ("198.19.255.255", "benchmarking"),
            ("198.51.100.7", "documentation"),
            ("203.0.113.9", "documentation"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("240.0.0.1", "reserved"),
            ("255.255.255.255", "broadcast"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("::7f00:1", "IPv4-compatible"),
            ("64:ff9b:1::1", "local-use NAT64"),
            ("100::1", "discard-only"),
            ("2001::1", "Teredo"),
            ("2001:db8::1", "documentation"),
            ("3fff::1", "documentation"),
            ("fc00::1", "unique local"),
            ("fd12:3456::1", "unique local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            // IPv6 forms that embed an IPv4 address are judged by it.
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::7f00:1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:c0a8:0101::1", "private"),
            ("2002:7f00:1::", "loopback"),
            ("::ffff:0:127.0.0.1", "loopback"),
            ("::ffff:0:a9fe:a9fe", "link-local"),
            ("::ffff:0:10.1.2.3", "private"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ];
        for (addr, why) in refused {
            match policy.check_ip(ip(addr)) {
                Err(NetError::TargetNotAllowed { reason, .. }) => {
                    assert!(reason.contains(why), "{addr}: {reason} lacks {why}")
                }
                other => panic!("{addr} should be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn accepts_public_addresses() {
        let policy = TargetPolicy::default();
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "198.20.0.1",
            "223.255.255.255",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "::ffff:0:8.8.8.8",
        ] {
            assert_eq!(policy.check_ip(ip(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn refusal_message_names_address_and_setting() {
        let err = TargetPolicy::default()
            .check_ip(ip("127.0.0.1"))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "target address 127.0.0.1 is not allowed (loopback); an operator can allow it with HOOKD_ALLOWED_TARGET_CIDRS"
        );
    }

    #[test]
    fn allowed_ranges_override() {
        let policy = TargetPolicy::new(nets("127.0.0.0/8"));
        assert_eq!(policy.check_ip(ip("127.0.0.1")), Ok(()));
        assert_eq!(policy.check_ip(ip("::ffff:127.0.0.2")), Ok(()));
        assert!(policy.check_ip(ip("10.0.0.1")).is_err());
        assert!(policy.check_ip(ip("::1")).is_err());
        assert_eq!(policy.check_ip(ip("::ffff:0:127.0.0.3")), Ok(()));
        assert!(policy.check_ip(ip("::ffff:0:10.0.0.1")).is_err());
        let policy = TargetPolicy::new(nets("fd00::/8"));
        assert_eq!(policy.check_ip(ip("fd00::5")), Ok(()));
        assert!(policy.check_ip(ip("fc00::5")).is_err());
    }

    #[test]
    fn parses_allowed_setting() {
        assert_eq!(nets(""), vec![]);
        assert_eq!(nets("  "), vec![]);
        assert_eq!(
            nets(" 127.0.0.0/8 , ::1,10.1.2.3/16,"),
            vec![
                "127.0.0.0/8".parse::<IpNet>().unwrap(),
                "::1/128".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ]
        );
        let err = TargetPolicy::parse_allowed("10.0.0.0/8, nope").unwrap_err();
        assert_eq!(
            err.to_string(),
            "HOOKD_ALLOWED_TARGET_CIDRS: \"nope\" is not an IP address or CIDR range"
        );
    }

    #[test]
    fn parses_target_urls() {
        let url = TargetUrl::parse("https://Example.COM/hook?a=1").unwrap();
        assert_eq!(url.as_str(), "https://example.com/hook?a=1");
        assert_eq!((url.host(), url.port()), ("example.com", 443));
        assert_eq!(TargetUrl::parse("http://example.com").unwrap().port(), 80);
        let url = TargetUrl::parse("http://[::1]:8080/x").unwrap();
        assert_eq!((url.host(), url.port()), ("::1", 8080));
        assert_eq!(url.url().path(), "/x");
        // Numeric host forms are normalised to dotted IPv4 by the parser.
        let url = TargetUrl::parse("http://2130706433/").unwrap();
        assert_eq!(url.ip(), Some(ip("127.0.0.1")));

        let cases = [
            ("ftp://example.com/", NetError::UrlScheme),
            ("file:///etc/passwd", NetError::UrlScheme),
            ("mailto:a@example.com", NetError::UrlScheme),
            ("http://user:pass@example.com/", NetError::UrlUserinfo),
            ("http://user@example.com/", NetError::UrlUserinfo),
            ("/relative/path", NetError::UrlRelative),
            ("example.com/hook", NetError::UrlRelative),
        ];
        for (input, want) in cases {
            assert_eq!(TargetUrl::parse(input), Err(want), "{input}");
        }
        for no_host in ["http://", "http:///", "https://:443/"] {
            let err = TargetUrl::parse(no_host).unwrap_err();
            assert_eq!(err.to_string(), "url is not valid: empty host", "{no_host}");
        }
        assert!(matches!(
            TargetUrl::parse("http://exa mple.com/"),
            Err(NetError::UrlInvalid(_))
        ));
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(TargetUrl::parse(&long), Err(NetError::UrlTooLong));
        let fits = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN - 20));
        assert_eq!(TargetUrl::parse(&fits).unwrap().as_str().len(), MAX_URL_LEN);
    }

    #[tokio::test]
    async fn check_target_judges_literals_and_localhost_without_resolving() {
        let policy = TargetPolicy::default();
        for url in [
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://127.0.0.1/",
            "http://[::1]/",
            "http://[::ffff:169.254.169.254]/",
            "http://[::ffff:0:127.0.0.1]:8080/",
            "http://[64:ff9b::127.0.0.1]/",
            "http://[2002:7f00:1::1]/",
            "http://[2001:0:4136:e378:8000:63bf:3fff:fdd2]/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://127.0.0.1./",
        ] {
            let url = TargetUrl::parse(url).unwrap();
            assert!(policy.check_target(&url).await.is_err(), "{url:?}");
        }
        let url = TargetUrl::parse("http://93.184.216.34/").unwrap();
        assert_eq!(policy.check_target(&url).await, Ok(()));
        // localhost stands for both loopback addresses; allowing either is enough, as delivery
        // connects only to an allowed one.
        let url = TargetUrl::parse("http://localhost:3000/").unwrap();
        for allowed in ["127.0.0.0/8, ::1", "127.0.0.0/8", "::1"] {
            let policy = TargetPolicy::new(nets(allowed));
            assert_eq!(policy.check_target(&url).await, Ok(()), "{allowed}");
        }
    }

    #[tokio::test]
    async fn unresolvable_name_is_accepted_at_save_but_not_at_delivery() {
        let policy = TargetPolicy::default();
        let url = TargetUrl::parse("http://nonexistent.invalid/").unwrap();
        assert_eq!(policy.check_target(&url).await, Ok(()));
        assert_eq!(
            policy.resolve_checked(&url).await,
            Err(NetError::Unresolvable("nonexistent.invalid".into()))
        );
    }

    #[tokio::test]
    async fn resolve_checked_returns_passing_addresses() {
        let url = TargetUrl::parse("http://127.0.0.1:9/").unwrap();
        let refused = TargetPolicy::default().resolve_checked(&url).await;
        assert!(matches!(refused, Err(NetError::TargetNotAllowed { .. })));
        let policy = TargetPolicy::new(nets("127.0.0.0/8"));
        let addrs = policy.resolve_checked(&url).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:9".parse::<SocketAddr>().unwrap()]);
        // Only the allowed half of localhost is returned.
        let url = TargetUrl::parse("http://localhost/").unwrap();
        let addrs = policy.resolve_checked(&url).await.unwrap();
        assert_eq!(addrs, vec!["127.0.0.1:80".parse::<SocketAddr>().unwrap()]);
    }

    #[test]
    fn allowlist_parses_and_matches() {
        let list =
            IpAllowlist::parse(&["192.168.1.100", "10.0.0.1/8", " 2001:db8::/32 ", "::1"]).unwrap();
        assert_eq!(
            list.entries(),
            ["192.168.1.100", "10.0.0.0/8", "2001:db8::/32", "::1"]
        );
        for allowed in [
            "192.168.1.100",
            "10.255.0.1",
            "2001:db8::42",
            "::1",
            "::ffff:10.1.2.3",
            "::ffff:192.168.1.100",
        ] {
            assert!(list.allows(ip(allowed)), "{allowed}");
        }
        for denied in [
            "192.168.1.101",
            "11.0.0.1",
            "2001:db9::1",
            "::2",
            "::ffff:11.0.0.1",
        ] {
            assert!(!list.allows(ip(denied)), "{denied}");
        }
        assert!(!list.is_empty());
    }

    #[test]
    fn allowlist_mapped_entry_matches_v4_peer() {
        let list = IpAllowlist::parse(&["::ffff:10.0.0.0/104"]).unwrap();
        assert_eq!(list.entries(), ["10.0.0.0/8"]);
        assert!(list.allows(ip("10.9.9.9")));
    }

    #[test]
    fn empty_allowlist_allows_everyone() {
        let list = IpAllowlist::parse::<&str>(&[]).unwrap();
        assert!(list.is_empty() && list.allows(ip("203.0.113.1")) && list.allows(ip("::1")));
    }

    #[test]
    fn allowlist_error_names_index_and_entry() {
        let err = IpAllowlist::parse(&["1.2.3.4", "::1", "10.0.0.0/33"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "allowed_ips[2]: \"10.0.0.0/33\" is not an IP address or CIDR range"
        );
        assert!(IpAllowlist::parse(&[""]).is_err());
        assert!(IpAllowlist::parse(&["example.com"]).is_err());
    }

    #[test]
    fn client_ip_without_trusted_proxy_ignores_forwarded_for() {
        let peer = ip("203.0.113.7");
        assert_eq!(client_ip(peer, Some("1.2.3.4"), &[]), peer);
        // Spoofed header from an untrusted peer is ignored.
        let trusted = nets("10.0.0.0/8");
        assert_eq!(client_ip(peer, Some("10.0.0.5, 1.2.3.4"), &trusted), peer);
        assert_eq!(client_ip(peer, None, &trusted), peer);
    }

    #[test]
    fn client_ip_walks_trusted_hops_from_the_right() {
        let trusted = nets("10.0.0.0/8, fd00::/8");
        let peer = ip("10.0.0.1");
        // The client's own spoofed entry (9.9.9.9) sits left of the real one.
        assert_eq!(
            client_ip(peer, Some("9.9.9.9, 198.51.100.4, 10.0.0.2"), &trusted),
            ip("198.51.100.4")
        );
        assert_eq!(
            client_ip(peer, Some("2001:db8::5"), &trusted),
            ip("2001:db8::5")
        );
        assert_eq!(
            client_ip(
                ip("fd00::1"),
                Some("[2001:db8::9]:443,10.0.0.3:8080"),
                &trusted
            ),
            ip("2001:db8::9")
        );
        // Mapped peer address of a v4 proxy is trusted too.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), Some("1.2.3.4"), &trusted),
            ip("1.2.3.4")
        );
        // Malformed entry: stop at the last good address.
        assert_eq!(
            client_ip(peer, Some("1.2.3.4, garbage, 10.0.0.2"), &trusted),
            ip("10.0.0.2")
        );
        assert_eq!(client_ip(peer, Some("unknown"), &trusted), peer);
        assert_eq!(client_ip(peer, Some(""), &trusted), peer);
        // Every hop trusted: the leftmost is the best we know.
        assert_eq!(
            client_ip(peer, Some("10.0.0.9, 10.0.0.2"), &trusted),
            ip("10.0.0.9")
        );
    }
}
