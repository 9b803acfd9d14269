//! Memory per tracked key of the detector's tables, measured in-process by counting
//! allocations, and a check that a flood of new keys past the caps does not grow it.
//!
//! ```sh
//! cargo test --test detector_memory -- --nocapture
//! ```
//!
//! The detector starts empty with the default caps (`max_client_domains` 65,536, `max_domains`
//! 32,768, `max_clients` 16,384) and is filled in three phases, each adding a different mix of
//! keys (new clients on one domain; one client on new domains; known clients on known domains
//! in new combinations). A counting global allocator gives the bytes each phase added, the
//! tables give the keys each phase added, and the three equations give the bytes per key of each
//! table: the state behind its `Arc<Mutex<_>>` plus the cache's slot for it, amortised over the
//! cache's growth. Bytes are as requested from the allocator (its own rounding and arenas come
//! on top; `bench/run.sh`'s W3 RSS figure shows the whole process). Then 100,000 more
//! (client, domain) keys arrive: the tables stay at their caps and the bytes stay flat.
//! The names are ordinary (`www`), so no pair keeps sample names (a suspicious pair adds at
//! most 3 × 100 bytes of samples).

use std::alloc::{GlobalAlloc, Layout, System};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicIsize, Ordering};

use dnsward::clock::ManualClock;
use dnsward::detect::{DetectConfig, Detector, GroupDetectConfig, Observation};
use dnsward::identity::ClientKey;

/// Counts live heap bytes.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

#[allow(clippy::cast_possible_wrap)] // allocation sizes are below isize::MAX by contract
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: as above.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn live() -> f64 {
    #[allow(clippy::cast_precision_loss)]
    let v = LIVE.load(Ordering::Relaxed) as f64;
    v
}

/// Keys per table: (client, domain), domain, client.
fn keys(d: &Detector) -> [f64; 3] {
    #[allow(clippy::cast_precision_loss)]
    d.tracked_keys_by_table().map(|(_, n)| n as f64)
}

fn ask(d: &Detector, settings: &GroupDetectConfig, client: u32, domain: u32) {
    let key = ClientKey::from(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + client)));
    let registrable = format!("d{domain}.example");
    let qname = format!("www.{registrable}");
    d.observe(&Observation {
        client: &key,
        group: "agents",
        qname: &qname,
        domain: &registrable,
        qtype: 1,
        settings,
    });
}

/// Solves `a · x = b` for 3 unknowns (Gaussian elimination with partial pivoting).
fn solve(mut a: [[f64; 3]; 3], mut b: [f64; 3]) -> [f64; 3] {
    for col in 0..3 {
        let pivot = (col..3)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap_or(col);
        a.swap(col, pivot);
        b.swap(col, pivot);
        for row in col + 1..3 {
            let f = a[row][col] / a[col][col];
            let pivot_row = a[col];
            for (x, p) in a[row].iter_mut().zip(pivot_row).skip(col) {
                *x -= f * p;
            }
            b[row] -= f * b[col];
        }
    }
    let mut x = [0.0; 3];
    for row in (0..3).rev() {
        let s: f64 = (row + 1..3).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - s) / a[row][row];
    }
    x
}

#[test]
fn memory_per_tracked_key_is_fixed_and_bounded() {
    let cfg = DetectConfig::default();
    let caps = [cfg.max_client_domains, cfg.max_domains, cfg.max_clients];
    let settings = GroupDetectConfig::default();
    let before = live();
    let d = Detector::new(&cfg, ManualClock::new());
    let empty = live() - before;
    let clients = u32::try_from(cfg.max_clients).unwrap_or(u32::MAX);
    let domains = u32::try_from(cfg.max_domains).unwrap_or(u32::MAX);
    let pairs = u32::try_from(cfg.max_client_domains).unwrap_or(u32::MAX);

    // Three phases, each a different mix of new keys.
    let phases: [Box<dyn Fn()>; 3] = [
        // New clients on one domain: a client and a pair each.
        Box::new(|| (0..clients).for_each(|c| ask(&d, &settings, c, 0))),
        // One client on new domains: a domain and a pair each.
        Box::new(|| (1..domains).for_each(|dom| ask(&d, &settings, 0, dom))),
        // Known clients on known domains, new combinations: a pair each, up to the cap.
        Box::new(|| {
            let room = pairs.saturating_sub(clients + domains - 1);
            (0..room).for_each(|j| {
                ask(&d, &settings, 1 + j % (clients - 1), 1 + j / (clients - 1));
            });
        }),
    ];
    let (mut a, mut b) = ([[0.0; 3]; 3], [0.0; 3]);
    for (i, phase) in phases.iter().enumerate() {
        let (k0, m0) = (keys(&d), live());
        phase();
        let (k1, m1) = (keys(&d), live());
        a[i] = [k1[0] - k0[0], k1[1] - k0[1], k1[2] - k0[2]];
        b[i] = m1 - m0;
    }
    let per_key = solve(a, b);
    let filled = keys(&d);
    let full = live() - before;
    println!(
        "empty detector: {:.0} KiB (shared-name table {} KiB, the answer tables 2.5 MiB, the appearance memo 256 KiB and the tables' fixed parts)",
        empty / 1024.0,
        cfg.shared_name_slots.next_power_of_two() * 8 / 1024
    );
    for (i, name) in ["client_domain", "domain", "client"].iter().enumerate() {
        println!(
            "{name:14} {:>6.0} of cap {:>6}  {:>5.0} bytes per key  {:>5.1} MiB at the cap",
            filled[i],
            caps[i],
            per_key[i],
            per_key[i] * f64::from(u32::try_from(caps[i]).unwrap_or(u32::MAX)) / 1_048_576.0
        );
    }
    println!("filled: {:.1} MiB", full / 1_048_576.0);

    // Past the caps: 100,000 more (client, domain) keys on new domains.
    for j in 0..100_000u32 {
        ask(&d, &settings, j % clients, domains + j);
    }
    let flooded = keys(&d);
    let after = live() - before;
    println!(
        "after 100,000 more keys: {:.1} MiB, keys {flooded:?}",
        after / 1_048_576.0
    );

    // Each key is a fixed-size state: the layout is at most ~1.4 KB (a pair's name templates
    // and recent labels included), plus the cache's slot.
    for (i, bytes) in per_key.iter().enumerate() {
        assert!(
            (500.0..1800.0).contains(bytes),
            "table {i}: {bytes} bytes per key"
        );
    }
    #[allow(clippy::cast_precision_loss)]
    for i in 0..3 {
        assert!(filled[i] >= 0.9 * caps[i] as f64, "table {i} not filled");
        assert!(flooded[i] <= caps[i] as f64, "table {i} past its cap");
    }
    assert!(
        after <= full * 1.05,
        "memory grew past the caps: {full} → {after}"
    );
}
