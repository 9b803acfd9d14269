//! The built-in local zones every recursive resolver serves itself (`[zones] defaults`, on by
//! default), as Unbound's default `local-zone`s do:
//!
//! - `localhost` (RFC 6761 §6.3): `localhost` and every name under it answer `127.0.0.1` and
//!   `::1`; their reverse names (`1.0.0.127.in-addr.arpa`, the 32-nibble `::1` name) answer
//!   `PTR localhost.`, the rest of `127.in-addr.arpa` NXDOMAIN;
//! - the reverse zones of private and special-use address space (RFC 6303: RFC 1918, `0/8`,
//!   link-local, the documentation networks, the shared address space of RFC 6598, broadcast,
//!   IPv6 unspecified, unique-local `fd00::/8` and link-local `fe80::/10`, `2001:db8::/32`):
//!   NXDOMAIN with the zone's SOA, so a PTR lookup of an internal address never goes to the
//!   internet's servers;
//! - the special-use names `invalid`, `test` (RFC 6761), `onion` (RFC 7686) and `home.arpa`
//!   (RFC 8375): NXDOMAIN.
//!
//! A zone the operator configures at or above one of these, or a conditional forward zone at,
//! above or below one, replaces it (a configured zone below one answers its own names by the
//! longest match): a company with its own `10.in-addr.arpa` forwards it to its
//! own servers and gets their answers. A group's deny rules still come first; an allowlist
//! that does not list a built-in zone's names still gets its answers (they leave nothing to
//! guard: never forwarded, the same for everyone), as from Unbound
//! ([`crate::policy::group::Group::decide_in`]).

/// The zone text for each built-in zone origin: SOA and NS at the apex, and what it answers.
pub(super) fn zones() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut add = |origin: String, extra: &str| {
        let text = format!(
            "$ORIGIN {origin}.\n$TTL 10800\n\
             @ IN SOA localhost. nobody.invalid. 1 3600 1200 604800 10800\n\
             @ IN NS localhost.\n{extra}"
        );
        out.push((origin, text));
    };
    add(
        "localhost".into(),
        "@ IN A 127.0.0.1\n@ IN AAAA ::1\n* IN A 127.0.0.1\n* IN AAAA ::1\n",
    );
    add("127.in-addr.arpa".into(), "1.0.0 IN PTR localhost.\n");
    let v6_loopback = format!("1.{}ip6.arpa", "0.".repeat(31));
    add(v6_loopback, "@ IN PTR localhost.\n");
    let v4 = [
        "0",
        "10",
        "168.192",
        "254.169",
        "2.0.192",
        "100.51.198",
        "113.0.203",
    ]
    .into_iter()
    .map(String::from)
    .chain((16..=31).map(|b| format!("{b}.172")))
    .chain((64..=127).map(|b| format!("{b}.100")))
    .chain(std::iter::once("255.255.255.255".to_string()));
    for zone in v4 {
        add(format!("{zone}.in-addr.arpa"), "");
    }
    let v6_unspecified = format!("{}ip6.arpa", "0.".repeat(32));
    let v6 = ["d.f", "8.e.f", "9.e.f", "a.e.f", "b.e.f", "8.b.d.0.1.0.0.2"]
        .into_iter()
        .map(|z| format!("{z}.ip6.arpa"))
        .chain(std::iter::once(v6_unspecified));
    for zone in v6 {
        add(zone, "");
    }
    for name in ["invalid", "test", "onion", "home.arpa"] {
        add(name.into(), "");
    }
    out
}
