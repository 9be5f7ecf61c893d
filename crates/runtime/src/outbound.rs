//! Which outbound HTTP requests a component may make: Spin's `allowed_outbound_hosts`.
//!
//! Syntax: `scheme://host[:port]` where scheme may be `*`, host may be `*` or
//! `*.domain`, and port may be a number, a range `a..b`, or `*`; a missing port means
//! the scheme's default. Anything not allowed is refused before a connection is made.

/// One parsed `allowed_outbound_hosts` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedHost {
    scheme: Option<String>,
    host: HostPattern,
    port: PortPattern,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum HostPattern {
    Any,
    Exact(String),
    /// `*.example.com`: any subdomain (not the bare domain).
    SubdomainOf(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum PortPattern {
    Any,
    Default,
    Range(u16, u16),
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" => Some(80),
        "https" => Some(443),
        _ => None,
    }
}

impl AllowedHost {
    pub fn parse(raw: &str) -> Result<Self, String> {
        let (scheme, rest) = raw.split_once("://").ok_or_else(|| {
            format!("{raw:?} needs a scheme, e.g. \"https://{raw}\" or \"*://{raw}\"")
        })?;
        let scheme = match scheme {
            "*" => None,
            s if !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'+') =>
            {
                Some(s.to_string())
            }
            s => return Err(format!("{s:?} is not a URL scheme")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains('/') {
            return Err(format!("{raw:?} must not have a path"));
        }
        let (host, port) = match rest.rsplit_once(':') {
            // An IPv6 literal without a port: `[::1]`.
            Some((h, _)) if rest.ends_with(']') && h.contains('[') => (rest, None),
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        };
        let host = match host {
            "" => return Err(format!("{raw:?} has no host")),
            "*" => HostPattern::Any,
            h if h.starts_with("*.") && h.len() > 2 && !h[2..].contains('*') => {
                HostPattern::SubdomainOf(h[2..].to_ascii_lowercase())
            }
            h if h.contains('*') => {
                return Err(format!(
                    "{h:?}: '*' is allowed only as the whole host or as '*.domain'"
                ));
            }
            h => HostPattern::Exact(
                h.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_ascii_lowercase(),
            ),
        };
        let port = match port {
            None => {
                if scheme.as_deref().and_then(default_port).is_none() {
                    return Err(format!(
                        "{raw:?} needs a port: its scheme has no default one"
                    ));
                }
                PortPattern::Default
            }
            Some("*") => PortPattern::Any,
            Some(p) => {
                let parse = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| format!("{p:?} is not a port, a range 'a..b' or '*'"))
                };
                match p.split_once("..") {
                    // `a..b` is half-open, as in Spin: `8000..8010` allows 8000 to 8009.
                    Some((a, b)) => {
                        let (a, b) = (parse(a)?, parse(b)?);
                        if a >= b {
                            return Err(format!("port range {p:?} is empty"));
                        }
                        PortPattern::Range(a, b - 1)
                    }
                    None => {
                        let n = parse(p)?;
                        PortPattern::Range(n, n)
                    }
                }
            }
        };
        Ok(AllowedHost { scheme, host, port })
    }

    /// Whether a request to `scheme://host:port` is allowed by this entry.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        if self.scheme.as_deref().is_some_and(|s| s != scheme) {
            return false;
        }
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_ascii_lowercase();
        let host_ok = match &self.host {
            HostPattern::Any => true,
            HostPattern::Exact(h) => *h == host,
            HostPattern::SubdomainOf(d) => host
                .strip_suffix(d.as_str())
                .is_some_and(|sub| sub.ends_with('.') && sub.len() > 1),
        };
        let Some(port) = port.or_else(|| default_port(scheme)) else {
            return false;
        };
        let port_ok = match self.port {
            PortPattern::Any => true,
            PortPattern::Default => default_port(scheme) == Some(port),
            PortPattern::Range(a, b) => (a..=b).contains(&port),
        };
        host_ok && port_ok
    }
}

/// The allow-list of one component.
#[derive(Debug, Clone, Default)]
pub struct OutboundPolicy {
    allowed: Vec<AllowedHost>,
}

impl OutboundPolicy {
    pub fn new(allowed: Vec<AllowedHost>) -> Self {
        OutboundPolicy { allowed }
    }

    /// Whether `scheme://authority` may be called.
    pub fn allows(&self, scheme: &str, host: &str, port: Option<u16>) -> bool {
        self.allowed.iter().any(|a| a.allows(scheme, host, port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allows(entry: &str, scheme: &str, host: &str, port: Option<u16>) -> bool {
        AllowedHost::parse(entry)
            .unwrap()
            .allows(scheme, host, port)
    }

    #[test]
    fn exact_host_uses_the_schemes_default_port() {
        assert!(allows(
            "https://business-api.tiktok.com",
            "https",
            "business-api.tiktok.com",
            None
        ));
        assert!(allows(
            "https://business-api.tiktok.com",
            "https",
            "business-api.tiktok.com",
            Some(443)
        ));
        assert!(!allows(
            "https://business-api.tiktok.com",
            "https",
            "business-api.tiktok.com",
            Some(8443)
        ));
        assert!(!allows(
            "https://business-api.tiktok.com",
            "http",
            "business-api.tiktok.com",
            None
        ));
        assert!(!allows(
            "https://business-api.tiktok.com",
            "https",
            "evil.com",
            None
        ));
        assert!(!allows(
            "https://business-api.tiktok.com",
            "https",
            "business-api.tiktok.com.evil.com",
            None
        ));
    }

    #[test]
    fn wildcards() {
        assert!(allows(
            "http://127.0.0.1:*",
            "http",
            "127.0.0.1",
            Some(9123)
        ));
        assert!(!allows(
            "http://127.0.0.1:*",
            "http",
            "127.0.0.2",
            Some(9123)
        ));
        assert!(allows("*://*:*", "https", "anything.example", Some(1)));
        assert!(allows(
            "https://*.tiktok.com",
            "https",
            "business-api.tiktok.com",
            None
        ));
        assert!(!allows("https://*.tiktok.com", "https", "tiktok.com", None));
        assert!(!allows(
            "https://*.tiktok.com",
            "https",
            "eviltiktok.com",
            None
        ));
        assert!(allows(
            "http://localhost:8000..8010",
            "http",
            "localhost",
            Some(8005)
        ));
        assert!(
            !allows(
                "http://localhost:8000..8010",
                "http",
                "localhost",
                Some(8010)
            ),
            "ranges exclude their end, as in Spin"
        );
        assert!(allows(
            "http://localhost:8000..8010",
            "http",
            "localhost",
            Some(8000)
        ));
        assert!(allows("http://[::1]:3000", "http", "[::1]", Some(3000)));
    }

    #[test]
    fn refuses_malformed_entries() {
        for bad in [
            "127.0.0.1",
            "https://",
            "https://a.com/path",
            "https://a*.com",
            "redis://host",
            "http://h:x",
            "http://h:9..1",
            "http://h:9..9",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
    }
}
