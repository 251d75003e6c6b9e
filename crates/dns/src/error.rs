//! The DNS role's errors.

use std::net::SocketAddr;

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cannot bind {what} on {address}: {source}")]
    Bind {
        what: &'static str,
        address: SocketAddr,
        source: std::io::Error,
    },
    #[error("'{0}' is not a resolver address (IP or IP:port)")]
    InvalidResolver(String),
    #[error("'{0}' is not a DNS domain")]
    InvalidDomain(String),
    #[error("master event stream: {0}")]
    Stream(String),
    #[error("DNS server: {0}")]
    Serve(String),
}
