//! DNS Cookies (RFC 7873, server cookies as RFC 9018 specifies them): proof that a UDP client
//! really is at its source address.
//!
//! A client that sends a COOKIE option gets a server cookie back, computed from its client
//! cookie, its address and a timestamp under a secret only this process knows. When it sends
//! that server cookie again, the query provably came from an address that received our earlier
//! answer: a forged source address cannot know it. The pipeline uses this to decide which
//! evidence may quarantine a whole client ([`crate::contain`]): only source-verified queries
//! (TCP, a valid cookie, an authenticated identity) can; spoofable UDP evidence can throttle or
//! sinkhole the offending domain, never lock a victim out.
//!
//! Server cookie layout (RFC 9018 §4.2): version `1`, three reserved zero bytes, a 32-bit
//! timestamp (seconds since the Unix epoch), and an 8-byte SipHash-2-4 over client cookie,
//! version, reserved, timestamp and client address. A cookie older than one hour, or more than
//! five minutes in the future, is not valid (RFC 9018 §4.3); one older than half an hour gets a
//! fresh one. The secret is random per process: after a restart clients simply learn a new
//! cookie with their next answer.

use std::hash::Hasher;
use std::net::IpAddr;

use siphasher::sip::SipHasher24;

use crate::wire::Cookie;

/// Length of the server cookie this server issues.
pub const SERVER_COOKIE_LEN: usize = 16;
/// A server cookie is valid for this long after it was issued.
const LIFETIME_SECS: u32 = 3600;
/// A cookie this old is still valid but replaced in the answer.
const REFRESH_SECS: u32 = 1800;
/// Tolerated clock skew for a timestamp in the future.
const FUTURE_SECS: u32 = 300;

/// What a query's cookie proves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieCheck {
    /// No COOKIE option.
    Absent,
    /// A client cookie only, or a server cookie that is not ours, stale, or for another
    /// address: the source is not verified (the answer carries a fresh server cookie).
    Unverified,
    /// Our server cookie for this client cookie and address: the source is verified.
    Verified,
}

/// The per-process secret and the cookie arithmetic.
#[derive(Clone)]
pub struct CookieSecret {
    key: [u8; 16],
}

impl std::fmt::Debug for CookieSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieSecret(..)")
    }
}

impl CookieSecret {
    /// A fresh random secret.
    ///
    /// # Errors
    /// The operating system's random source failed.
    pub fn random() -> Result<Self, getrandom::Error> {
        let mut key = [0u8; 16];
        getrandom::fill(&mut key)?;
        Ok(Self { key })
    }

    /// A fixed secret (tests).
    #[must_use]
    pub fn from_key(key: [u8; 16]) -> Self {
        Self { key }
    }

    fn hash(&self, client: &[u8; 8], head: &[u8; 8], ip: IpAddr) -> [u8; 8] {
        let mut h = SipHasher24::new_with_key(&self.key);
        h.write(client);
        h.write(head);
        match ip {
            IpAddr::V4(v4) => h.write(&v4.octets()),
            IpAddr::V6(v6) => h.write(&v6.octets()),
        }
        h.finish().to_be_bytes()
    }

    /// The server cookie for `client` at `ip`, issued at `now` (Unix seconds).
    #[must_use]
    pub fn issue(&self, client: &[u8; 8], ip: IpAddr, now: u32) -> [u8; SERVER_COOKIE_LEN] {
        let mut head = [0u8; 8];
        head[0] = 1;
        head[4..8].copy_from_slice(&now.to_be_bytes());
        let mut out = [0u8; SERVER_COOKIE_LEN];
        out[..8].copy_from_slice(&head);
        out[8..].copy_from_slice(&self.hash(client, &head, ip));
        out
    }

    /// Check the cookie a query carried, from `ip`, at `now` (Unix seconds); also returns the
    /// server cookie to put in the answer (a fresh one unless the client's is ours and young).
    #[must_use]
    pub fn check(
        &self,
        cookie: Option<&Cookie>,
        ip: IpAddr,
        now: u32,
    ) -> (CookieCheck, Option<[u8; SERVER_COOKIE_LEN]>) {
        let Some(cookie) = cookie else {
            return (CookieCheck::Absent, None);
        };
        let fresh = || Some(self.issue(&cookie.client, ip, now));
        let Some(server) = cookie.server() else {
            return (CookieCheck::Unverified, fresh());
        };
        let Ok(ours) = <[u8; SERVER_COOKIE_LEN]>::try_from(server) else {
            return (CookieCheck::Unverified, fresh());
        };
        let mut head = [0u8; 8];
        head.copy_from_slice(&ours[..8]);
        let issued = u32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        let age = now.wrapping_sub(issued);
        let in_window = head[0] == 1
            && head[1..4] == [0, 0, 0]
            && (age <= LIFETIME_SECS || issued.wrapping_sub(now) <= FUTURE_SECS);
        if !in_window || !constant_time_eq(&ours[8..], &self.hash(&cookie.client, &head, ip)) {
            return (CookieCheck::Unverified, fresh());
        }
        let answer = if age > REFRESH_SECS && age <= LIFETIME_SECS {
            fresh()
        } else {
            Some(ours)
        };
        (CookieCheck::Verified, answer)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie(client: [u8; 8], server: Option<&[u8]>) -> Cookie {
        let mut c = Cookie {
            client,
            server_len: 0,
            server: [0; 32],
        };
        if let Some(s) = server {
            c.server_len = u8::try_from(s.len()).unwrap();
            c.server[..s.len()].copy_from_slice(s);
        }
        c
    }

    #[test]
    fn a_returned_server_cookie_verifies_only_from_the_same_address_and_in_time() {
        let secret = CookieSecret::from_key([7; 16]);
        let ip: IpAddr = "192.0.2.10".parse().unwrap();
        let other: IpAddr = "192.0.2.11".parse().unwrap();
        let client = [1, 2, 3, 4, 5, 6, 7, 8];
        let t = 1_800_000_000;
        assert_eq!(secret.check(None, ip, t), (CookieCheck::Absent, None));
        let (first, server) = secret.check(Some(&cookie(client, None)), ip, t);
        assert_eq!(first, CookieCheck::Unverified);
        let server = server.unwrap();
        let back = cookie(client, Some(&server));
        assert_eq!(
            secret.check(Some(&back), ip, t + 10).0,
            CookieCheck::Verified
        );
        assert_eq!(
            secret.check(Some(&back), other, t + 10).0,
            CookieCheck::Unverified,
            "a spoofer at another address cannot reuse it"
        );
        assert_eq!(
            secret.check(Some(&cookie([9; 8], Some(&server))), ip, t).0,
            CookieCheck::Unverified,
            "bound to the client cookie"
        );
        assert_eq!(
            secret.check(Some(&back), ip, t + LIFETIME_SECS + 1).0,
            CookieCheck::Unverified,
            "expired"
        );
        let (aged, renewed) = secret.check(Some(&back), ip, t + REFRESH_SECS + 1);
        assert_eq!(aged, CookieCheck::Verified);
        assert_ne!(renewed, Some(server), "an aging cookie is replaced");
        let other_secret = CookieSecret::from_key([8; 16]);
        assert_eq!(
            other_secret.check(Some(&back), ip, t).0,
            CookieCheck::Unverified
        );
        let mut forged = server;
        forged[15] ^= 1;
        assert_eq!(
            secret.check(Some(&cookie(client, Some(&forged))), ip, t).0,
            CookieCheck::Unverified
        );
    }
}
