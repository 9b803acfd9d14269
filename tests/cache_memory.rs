//! Issue 13: the answer cache's byte bound must mean real heap bytes.
//!
//! This binary installs a counting global allocator (one per test binary, hence a file of its
//! own) that charges every allocation what glibc's malloc really takes for it: the usable size
//! of the chunk plus its 8-byte header. Counters are per thread, so tests running in parallel
//! do not see each other's allocations; the cache does all its work on the caller's thread.
//!
//! Two answer shapes are measured: the W3 flood's (NXDOMAIN with an SOA for
//! `<16-32 random [a-z0-9]>.flood.example`) and a typical A answer (one or two addresses, some
//! behind a CNAME). For each, the cache's accounted weight must stay within 1.3× of what the
//! entries really hold, and a cache filled far past its bound must hold no more real heap than
//! its `max_bytes` (plus a small slack).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

use dnsward::clock::ManualClock;
use dnsward::resolve::cache::{AnswerCache, CacheConfig};
use dnsward::wire::{self, rtype};
use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// Charges each allocation its real glibc footprint to the allocating (or freeing) thread.
struct Counting;

thread_local! {
    /// Live bytes this thread allocated minus what it freed (glibc chunk sizes).
    static LIVE: Cell<isize> = const { Cell::new(0) };
    /// Allocations this thread made minus those it freed.
    static BLOCKS: Cell<isize> = const { Cell::new(0) };
}

/// What glibc really spends on the block at `ptr`: its usable size plus the chunk header.
fn footprint(ptr: *mut u8) -> isize {
    // SAFETY: `ptr` was returned by the system allocator and is not yet freed.
    let usable = unsafe { libc::malloc_usable_size(ptr.cast()) };
    isize::try_from(usable).unwrap_or(isize::MAX) + 8
}

fn charge(bytes: isize, blocks: isize) {
    // `try_with`: the thread's counters may already be gone while it is exiting.
    let _ = LIVE.try_with(|l| l.set(l.get() + bytes));
    let _ = BLOCKS.try_with(|b| b.set(b.get() + blocks));
}

// SAFETY: every call is forwarded to `System`; only counters are kept on the side.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            charge(footprint(ptr), 1);
        }
        ptr
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            charge(footprint(ptr), 1);
        }
        ptr
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        charge(-footprint(ptr), -1);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let before = footprint(ptr);
        let out = unsafe { System.realloc(ptr, layout, new_size) };
        if !out.is_null() {
            charge(footprint(out) - before, 0);
        }
        out
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// This thread's live heap: (bytes, blocks).
fn live() -> (isize, isize) {
    (LIVE.with(Cell::get), BLOCKS.with(Cell::get))
}

/// A small deterministic generator (xorshift), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// bench/run.sh's flood name: 16-32 characters of [a-z0-9] under flood.example.
    fn flood_name(&mut self) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
        let len = 16 + (self.next() % 17) as usize;
        let mut name: String = (0..len)
            .map(|_| char::from(ALPHABET[(self.next() % 36) as usize]))
            .collect();
        name.push_str(".flood.example");
        name
    }
}

/// A plain query for `name` (no EDNS, as dnsperf sends).
fn query(name: &str, qtype: u16) -> Vec<u8> {
    let mut out = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        out.push(u8::try_from(label.len()).unwrap());
        out.extend_from_slice(label.as_bytes());
    }
    out.push(0);
    out.extend_from_slice(&qtype.to_be_bytes());
    out.extend_from_slice(&[0, 1]);
    out
}

/// The W3 upstream's answer: NXDOMAIN with flood.example's SOA (negative TTL 60 s).
fn flood_answer(name: &str) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    m.metadata.response_code = ResponseCode::NXDomain;
    m.add_query(hickory_proto::op::Query::query(
        Name::from_ascii(name).unwrap(),
        RecordType::A,
    ));
    let zone = Name::from_ascii("flood.example.").unwrap();
    let soa = SOA::new(
        Name::from_ascii("ns.flood.example.").unwrap(),
        Name::from_ascii("hostmaster.flood.example.").unwrap(),
        1,
        3600,
        600,
        86400,
        60,
    );
    m.add_authority(Record::from_rdata(zone, 3600, RData::SOA(soa)));
    m.to_vec().unwrap()
}

/// A typical A answer: one address, every third name two, every fifth behind a CNAME.
fn a_answer(name: &str, i: usize) -> Vec<u8> {
    let mut m = Message::new(7, MessageType::Response, OpCode::Query);
    let owner = Name::from_ascii(name).unwrap();
    m.add_query(hickory_proto::op::Query::query(
        owner.clone(),
        RecordType::A,
    ));
    let mut at = owner;
    if i.is_multiple_of(5) {
        let target = Name::from_ascii(format!("edge{i}.cdn.example.net.")).unwrap();
        m.add_answer(Record::from_rdata(
            at,
            300,
            RData::CNAME(CNAME(target.clone())),
        ));
        at = target;
    }
    let [x, y] = u16::try_from(i % 60_000).unwrap().to_be_bytes();
    m.add_answer(Record::from_rdata(
        at.clone(),
        300,
        RData::A(A::new(198, 51, x, y)),
    ));
    if i.is_multiple_of(3) {
        m.add_answer(Record::from_rdata(at, 300, RData::A(A::new(203, 0, x, y))));
    }
    m.to_vec().unwrap()
}

/// Insert `n` answers of a shape into `cache` as the pipeline does (prepare, insert, drop).
fn fill(cache: &AnswerCache, shape: Shape, n: usize, rng: &mut Rng) {
    let upstream: Arc<str> = "127.0.0.41:5301".into();
    for i in 0..n {
        let (name, answer) = match shape {
            Shape::Flood => {
                let name = rng.flood_name();
                let answer = flood_answer(&name);
                (name, answer)
            }
            Shape::A => {
                let name = format!("host{}-{i}.example.com", rng.next() % 1000);
                let answer = a_answer(&name, i);
                (name, answer)
            }
        };
        let packet = query(&name, rtype::A);
        let q = wire::parse_query(&packet).unwrap();
        let prepared = cache.prepare(&answer, Arc::clone(&upstream)).unwrap();
        assert!(prepared.cacheable);
        cache.insert(&q, &prepared);
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Flood,
    A,
}

/// Real heap per entry and accounted weight per entry, for `n` entries well under the bound.
fn per_entry(shape: Shape, n: usize) -> (f64, f64, f64) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let cfg = CacheConfig::default();
    let (bytes0, blocks0) = live();
    let cache = AnswerCache::new(&cfg, ManualClock::new());
    fill(&cache, shape, n, &mut rng);
    assert_eq!(cache.len(), n, "nothing evicted below the bound");
    let (bytes1, blocks1) = live();
    let n = n as f64;
    let real = (bytes1 - bytes0) as f64 / n;
    let blocks = (blocks1 - blocks0) as f64 / n;
    let accounted = cache.weight() as f64 / n;
    eprintln!(
        "{shape:?}: real {real:.0} B/entry in {blocks:.2} blocks, accounted {accounted:.0} B/entry"
    );
    drop(cache);
    (real, accounted, blocks)
}

#[test]
fn accounted_weight_matches_real_bytes_per_entry() {
    for shape in [Shape::Flood, Shape::A] {
        let (real, accounted, _) = per_entry(shape, 50_000);
        let ratio = real / accounted;
        assert!(
            (1.0 / 1.3..=1.3).contains(&ratio),
            "{shape:?}: real {real:.0} B/entry vs accounted {accounted:.0} (×{ratio:.2})"
        );
    }
}

#[test]
fn a_full_cache_holds_no_more_real_heap_than_its_bound() {
    for shape in [Shape::Flood, Shape::A] {
        let cfg = CacheConfig {
            max_bytes: 8 * 1024 * 1024,
            ..CacheConfig::default()
        };
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let (bytes0, _) = live();
        let cache = AnswerCache::new(&cfg, ManualClock::new());
        // Far past the bound: the cache evicts for most of the run.
        fill(&cache, shape, 150_000, &mut rng);
        let (bytes1, _) = live();
        let real = u64::try_from(bytes1 - bytes0).unwrap();
        eprintln!(
            "{shape:?}: {} entries, accounted {} B, real {real} B, bound {} B",
            cache.len(),
            cache.weight(),
            cfg.max_bytes
        );
        assert!(cache.weight() <= cfg.max_bytes);
        assert!(cache.len() < 150_000, "the bound evicted");
        assert!(
            real <= cfg.max_bytes + cfg.max_bytes / 20,
            "{shape:?}: real heap {real} B for a {} B bound",
            cfg.max_bytes
        );
    }
}
