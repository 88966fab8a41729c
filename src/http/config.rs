//! `[http]`: where the HTTP face listens and the limits of its listener.
//!
//! Invariant: [`parse_listen`] accepts loopback addresses only (`127.0.0.0/8`, `::1`,
//! `localhost`); the face has no TLS and app tokens must not cross a network.

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

/// The address `serve --http` listens on when given none.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8931";

/// `[http]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `127.0.0.1:8931`, `[::1]:8931` or `localhost:8931`; the face is off when absent (and
    /// `serve --http` is not given). Port 0 picks a free port (`daemon.status` shows it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Largest request body (base64 images count here).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Seconds a client has to send a request's head.
    pub header_timeout_secs: u64,
    /// Seconds a client has to send a request's body.
    pub body_timeout_secs: u64,
    /// HTTP connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Origins (`http://localhost:3000`) whose web pages may call the face (CORS). Empty: no
    /// browser page may (a request with another `Origin` is refused).
    pub cors_origins: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            max_body_bytes: 32 * 1024 * 1024,
            max_header_bytes: 64 * 1024,
            header_timeout_secs: 10,
            body_timeout_secs: 60,
            max_connections: 256,
            cors_origins: Vec::new(),
        }
    }
}

impl HttpConfig {
    /// The first problem, with its dotted key.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let bad = |k: &str, m: String| Err((format!("http.{k}"), m));
        if let Some(l) = &self.listen {
            if let Err(m) = parse_listen(l) {
                return bad("listen", m);
            }
        }
        if !(1024..=1024 * 1024 * 1024).contains(&self.max_body_bytes) {
            return bad("max_body_bytes", "must be between 1024 and 1073741824".into());
        }
        if !(8192..=1024 * 1024).contains(&self.max_header_bytes) {
            return bad("max_header_bytes", "must be between 8192 and 1048576".into());
        }
        if !(1..=3600).contains(&self.header_timeout_secs) {
            return bad("header_timeout_secs", "must be between 1 and 3600".into());
        }
        if !(1..=3600).contains(&self.body_timeout_secs) {
            return bad("body_timeout_secs", "must be between 1 and 3600".into());
        }
        if self.max_connections == 0 {
            return bad("max_connections", "must be at least 1".into());
        }
        for o in &self.cors_origins {
            if let Err(m) = check_origin(o) {
                return bad("cors_origins", m);
            }
        }
        Ok(())
    }
}

/// The socket address of a `listen` value; refuses anything but loopback.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    let shown: String = s.chars().take(64).collect();
    let addr = match s.strip_prefix("localhost:") {
        Some(port) => port
            .parse::<u16>()
            .map(|p| SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p))
            .map_err(|_| format!("`{shown}`: the port must be a number from 0 to 65535"))?,
        None => s
            .parse::<SocketAddr>()
            .map_err(|_| format!("`{shown}` is not an address with a port, such as 127.0.0.1:8931 or [::1]:8931"))?,
    };
    if !addr.ip().is_loopback() {
        return Err(format!(
            "`{shown}` is not a loopback address: the HTTP face listens on 127.0.0.1 or ::1 only (it has no TLS, and app tokens must not cross a network)"
        ));
    }
    Ok(addr)
}

/// An origin is `scheme://host[:port]`, nothing after it; `*` is refused.
fn check_origin(o: &str) -> Result<(), String> {
    let shown: String = o.chars().take(64).collect();
    let rest = o.strip_prefix("http://").or_else(|| o.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !host.contains(['/', '?', '#', ' ', '*']) => Ok(()),
        _ => Err(format!(
            "`{shown}` is not an origin such as http://localhost:3000 (scheme and host only; `*` is not allowed)"
        )),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn only_loopback_listens() {
        assert_eq!(parse_listen("127.0.0.1:8931").unwrap().port(), 8931);
        assert!(parse_listen("[::1]:0").is_ok());
        assert!(parse_listen("127.1.2.3:80").is_ok());
        assert_eq!(parse_listen("localhost:9000").unwrap(), "127.0.0.1:9000".parse().unwrap());
        for bad in ["0.0.0.0:8931", "[::]:8931", "192.168.1.2:8931", "10.0.0.1:1", "example.com:80"] {
            let e = parse_listen(bad).unwrap_err();
            assert!(e.contains("loopback") || e.contains("not an address"), "{bad}: {e}");
        }
        assert!(parse_listen("127.0.0.1").unwrap_err().contains("with a port"));
        assert!(parse_listen("localhost:http").unwrap_err().contains("port"));
    }

    #[test]
    fn validation_names_the_key() {
        let c = HttpConfig { listen: Some("0.0.0.0:1".into()), ..HttpConfig::default() };
        assert_eq!(c.validate().unwrap_err().0, "http.listen");
        let c = HttpConfig { cors_origins: vec!["*".into()], ..HttpConfig::default() };
        assert_eq!(c.validate().unwrap_err().0, "http.cors_origins");
        let c = HttpConfig { cors_origins: vec!["http://localhost:3000".into()], ..HttpConfig::default() };
        assert!(c.validate().is_ok());
        let c = HttpConfig { max_body_bytes: 10, ..HttpConfig::default() };
        assert_eq!(c.validate().unwrap_err().0, "http.max_body_bytes");
    }
}
