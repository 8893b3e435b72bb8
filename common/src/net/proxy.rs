//! The PROXY protocol, versions 1 and 2 (HAProxy's `proxy-protocol.txt`): a trusted
//! proxy in front of a daemon names the real client in a header before the protocol
//! begins. The header is read octet-exact, so nothing of the protocol after it is
//! consumed, and parsed by the `ppp` crate.
//!
//! Who may send one is `[listen] proxy_networks` ([`ProxyNetworks`]); the accept loop
//! (`crate::net::listener`) reads the header of those peers before admission, and the
//! line I/O (`crate::net::conn`) closes the connection of anyone else who sends one.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

/// How long a trusted proxy has to send its header after connecting.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The 12-octet signature that starts a version 2 header.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The longest version 1 header, CRLF included.
const V1_MAX: usize = 107;

/// `[listen] proxy_networks`: the peers whose connections begin with a header.
#[derive(Clone, Debug, Default)]
pub struct ProxyNetworks(Vec<ipnet::IpNet>);

impl ProxyNetworks {
    /// The networks of the config.
    pub fn new(networks: &[ipnet::IpNet]) -> Self {
        ProxyNetworks(networks.to_vec())
    }

    /// Whether a peer at `ip` is a trusted proxy (IPv4-mapped IPv6 addresses count as
    /// IPv4).
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|n| n.contains(&ip))
    }

    /// Whether there are no proxies at all.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Whether `start` (the first octets a client sent) begins a PROXY header: `PROXY ` or
/// the version 2 signature.
pub fn looks_like_header(start: &[u8]) -> bool {
    start.starts_with(b"PROXY ") || start.starts_with(V2_SIGNATURE)
}

/// Reads one PROXY header from `io`, octet-exact. Returns the client it names, or `None`
/// when it names none (v1 `UNKNOWN`, v2 `LOCAL` such as a proxy's own health check, or
/// an address family other than TCP over IPv4/IPv6): then the proxy itself is the peer.
///
/// # Errors
/// I/O errors, and `InvalidData` when the stream does not begin with a valid header.
pub async fn read_header<S: AsyncRead + Unpin>(io: &mut S) -> io::Result<Option<SocketAddr>> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("PROXY header: {what}"));
    // "PROXY UNKNOWN\r\n", the shortest v1 header, is 15 octets; every v2 header is 16+.
    let mut head = vec![0u8; 15];
    io.read_exact(&mut head).await?;
    if head.starts_with(b"PROXY ") {
        while !head.ends_with(b"\r\n") {
            if head.len() >= V1_MAX {
                return Err(bad("version 1 line too long"));
            }
            head.push(io.read_u8().await?);
        }
        let header = ppp::v1::Header::try_from(head.as_slice()).map_err(|e| bad(&e.to_string()))?;
        return Ok(match header.addresses {
            ppp::v1::Addresses::Unknown => None,
            ppp::v1::Addresses::Tcp4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
            ppp::v1::Addresses::Tcp6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        });
    }
    if !head.starts_with(V2_SIGNATURE) {
        return Err(bad("missing"));
    }
    head.push(io.read_u8().await?);
    let length = usize::from(u16::from_be_bytes([head[14], head[15]]));
    let start = head.len();
    head.resize(start + length, 0);
    io.read_exact(&mut head[start..]).await?;
    let header = ppp::v2::Header::try_from(head.as_slice()).map_err(|e| bad(&e.to_string()))?;
    if header.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match header.addresses {
        ppp::v2::Addresses::IPv4(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::IPv6(a) => Some(SocketAddr::from((a.source_address, a.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `bytes` followed by protocol data; returns the result and what was left.
    async fn parse(bytes: &[u8]) -> (io::Result<Option<SocketAddr>>, Vec<u8>) {
        let input = [bytes, b"EHLO next\r\n"].concat();
        let mut r = input.as_slice();
        let got = read_header(&mut r).await;
        (got, r.to_vec())
    }

    fn v2(command: u8, family: u8, addresses: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&u16::try_from(addresses.len()).unwrap().to_be_bytes());
        h.extend_from_slice(addresses);
        h
    }

    #[tokio::test]
    async fn version_1() {
        let (got, rest) = parse(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 25\r\n").await;
        assert_eq!(got.unwrap(), Some("192.0.2.7:56324".parse().unwrap()));
        assert_eq!(rest, b"EHLO next\r\n");
        let (got, _) = parse(b"PROXY TCP6 2001:db8::7 2001:db8::1 4000 110\r\n").await;
        assert_eq!(got.ok().flatten(), "[2001:db8::7]:4000".parse().ok());
        let (got, rest) = parse(b"PROXY UNKNOWN\r\n").await;
        assert!(matches!(got, Ok(None)));
        assert_eq!(rest, b"EHLO next\r\n");
        for bad in
            [&b"PROXY TCP4 300.0.0.1 1.2.3.4 1 2\r\n"[..], b"PROXY TCP4 1.2.3.4\r\n", b"EHLO mail.example.org\r\n"]
        {
            assert!(parse(bad).await.0.is_err(), "{bad:?}");
        }
        let long = [b"PROXY TCP4 ".as_slice(), &[b'1'; 120], b"\r\n"].concat();
        assert!(parse(&long).await.0.is_err());
    }

    #[tokio::test]
    async fn version_2() {
        let ipv4 = [192, 0, 2, 7, 198, 51, 100, 1, 0xdc, 0x04, 0, 25];
        let (got, rest) = parse(&v2(1, 0x11, &ipv4)).await;
        assert_eq!(got.ok().flatten(), "192.0.2.7:56324".parse().ok());
        assert_eq!(rest, b"EHLO next\r\n");
        // A TLV after the addresses is read with them.
        let with_tlv = [&ipv4[..], &[0x04, 0, 1, 0]].concat();
        let (got, rest) = parse(&v2(1, 0x11, &with_tlv)).await;
        assert_eq!(got.ok().flatten(), "192.0.2.7:56324".parse().ok());
        assert_eq!(rest, b"EHLO next\r\n");
        let (got, rest) = parse(&v2(0, 0x00, &[])).await;
        assert!(matches!(got, Ok(None)), "LOCAL names no client");
        assert_eq!(rest, b"EHLO next\r\n");
        let mut broken = v2(1, 0x11, &ipv4);
        broken[12] = 0x31; // version 3
        assert!(parse(&broken).await.0.is_err());
        assert!(parse(&v2(1, 0x11, &ipv4[..6])).await.0.is_err(), "addresses cut short");
    }

    #[test]
    fn trusted_networks() {
        let nets: Vec<ipnet::IpNet> = ["10.0.0.0/8", "2001:db8::/32"].iter().map(|n| n.parse().unwrap()).collect();
        let p = ProxyNetworks::new(&nets);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(p.trusts(ip("10.1.2.3")));
        assert!(p.trusts(ip("::ffff:10.1.2.3")));
        assert!(p.trusts(ip("2001:db8::5")));
        assert!(!p.trusts(ip("192.0.2.1")));
        assert!(looks_like_header(b"PROXY TCP4 ..."));
        assert!(looks_like_header(V2_SIGNATURE));
        assert!(!looks_like_header(b"EHLO x"));
    }
}
