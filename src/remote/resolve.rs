//! Name resolution for the HTTP client, once per server and not once per request.
//!
//! ureq resolves the host of every request, pooled connection or not, and with a timeout set
//! it does so on a new thread each time: a thread and a `getaddrinfo` per op. This resolver
//! answers an IP address in the URL at once (no thread, no lookup) and keeps a name's addresses
//! for [`KEEP`], asking ureq's own resolver (with its timeout) only when they are older.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::http::Uri;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

/// How long a name's addresses are used before they are looked up again (a server that moved
/// to another address is found within this).
pub const KEEP: Duration = Duration::from_secs(30);

/// ureq's resolver, with IP addresses answered directly and names' answers kept for [`KEEP`].
#[derive(Debug, Default)]
pub struct KeptResolver {
    lookup: DefaultResolver,
    kept: Mutex<HashMap<String, (Instant, ResolvedSocketAddrs)>>,
}

impl Resolver for KeptResolver {
    fn resolve(
        &self,
        uri: &Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) else {
            return self.lookup.resolve(uri, config, timeout);
        };
        let Some(key) = DefaultResolver::host_and_port(scheme, authority) else {
            return self.lookup.resolve(uri, config, timeout);
        };
        if let Ok(addr) = key.parse::<SocketAddr>() {
            let mut one = self.empty();
            one.push(addr);
            return Ok(one);
        }
        if let Ok(kept) = self.kept.lock()
            && let Some((at, addrs)) = kept.get(&key)
            && at.elapsed() < KEEP
        {
            return Ok(addrs.clone());
        }
        let addrs = self.lookup.resolve(uri, config, timeout)?;
        if let Ok(mut kept) = self.kept.lock() {
            kept.insert(key, (Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve(r: &KeptResolver, url: &str) -> Vec<SocketAddr> {
        let uri: Uri = url.parse().unwrap();
        let config = Config::default();
        let timeout = NextTimeout {
            after: Duration::from_secs(5).into(),
            reason: ureq::Timeout::Resolve,
            per_read: None,
            per_write: None,
        };
        r.resolve(&uri, &config, timeout).unwrap().to_vec()
    }

    #[test]
    fn an_ip_address_is_its_own_answer_and_a_name_is_kept() {
        let r = KeptResolver::default();
        assert_eq!(
            resolve(&r, "http://127.0.0.1:7811/v1/op"),
            vec!["127.0.0.1:7811".parse().unwrap()]
        );
        assert_eq!(
            resolve(&r, "http://[::1]:80/"),
            vec!["[::1]:80".parse().unwrap()]
        );
        assert!(
            r.kept.lock().unwrap().is_empty(),
            "addresses need no lookup"
        );
        let first = resolve(&r, "http://localhost:7811/");
        assert!(!first.is_empty());
        assert!(
            first
                .iter()
                .all(|a| a.port() == 7811 && a.ip().is_loopback())
        );
        assert_eq!(r.kept.lock().unwrap().len(), 1);
        assert_eq!(resolve(&r, "http://localhost:7811/test"), first);
    }
}
