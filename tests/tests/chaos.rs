//! The ingest promise under attack, as a property: whatever the overlaps, retries,
//! aborted requests, replica crashes and ClickHouse crashes, the rows an export reads
//! are exactly the events that were acknowledged, each once.
//!
//! Two replicas share one PostgreSQL job store and one ClickHouse server of the
//! test's own. Loaders send overlapping windows of their event streams — half with
//! an `Idempotency-Key` per window, half without (their events carry `event_id`s) —
//! to a random replica, some with a client timeout short enough to abandon the
//! request mid-flight, and retry each window until it is answered 200. Meanwhile the
//! test SIGKILLs a replica and restarts it, and SIGKILLs ClickHouse and restarts it.
//! `LOGPORT_CHAOS_SEED` replays a run (the seed is printed).

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use logport_tests::*;

/// xorshift64*: enough randomness for a test, reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const LOADERS: u64 = 4;
/// Each loader sends at least this many windows, and goes on until the chaos is over.
const WINDOWS: u64 = 20;
/// Crash rounds (a replica, then ClickHouse).
const ROUNDS: u32 = 2;

/// What the loaders went through.
#[derive(Default)]
struct Tally {
    retries: AtomicU64,
    abandoned: AtomicU64,
}

fn event(loader: u64, n: u64) -> Value {
    json!({
        "event_id": format!("0189abcd-{loader:04x}-7000-8000-{n:012}"),
        "click_id": format!("l{loader}-{n}"),
        "event_time": format!("2026-11-10 {:02}:{:02}:{:02}", n / 3600 % 24, n / 60 % 60, n % 60),
        "campaign_id": format!("camp{}", n % 5),
        "cost": (n % 7) as f64 / 4.0,
    })
}

/// One loader: windows of its stream that overlap the previous ones, each retried
/// until acknowledged. Returns the event ids of every acknowledged window.
async fn load(
    loader: u64,
    seed: u64,
    bases: [String; 2],
    stop: Arc<AtomicBool>,
    tally: Arc<Tally>,
) -> Vec<String> {
    let mut rng = Rng(seed ^ (loader + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    let keyed = loader.is_multiple_of(2);
    let mut acked = Vec::new();
    let mut start = 0u64;
    let mut w = 0;
    while w < WINDOWS || !stop.load(Ordering::SeqCst) {
        w += 1;
        let size = 20 + rng.below(120);
        let rows: String = (start..start + size)
            .map(|n| format!("{}\n", event(loader, n)))
            .collect();
        let key = format!("loader{loader}-window{w}");
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let base = &bases[rng.below(2) as usize];
            // One request in three gives up early: abandoned mid-flight.
            let timeout = if rng.below(3) == 0 {
                Duration::from_millis(20 + rng.below(300))
            } else {
                Duration::from_secs(30)
            };
            let mut req = reqwest::Client::new()
                .post(format!("{base}/v1/ingest/clicks"))
                .bearer_auth(ACME)
                .timeout(timeout)
                .body(rows.clone());
            if keyed {
                req = req.header("Idempotency-Key", &key);
            }
            match req.send().await {
                Ok(r) if r.status() == 200 => {
                    let body: Value = r.json().await.unwrap();
                    assert_eq!(body["accepted"], size, "{body}");
                    break;
                }
                Ok(r) => {
                    let status = r.status();
                    assert!(
                        status == 503 || status == 504,
                        "only 'retry later' answers are expected: {status} {}",
                        r.text().await.unwrap_or_default()
                    );
                }
                Err(e) => {
                    // Refused, reset or abandoned: retry.
                    if e.is_timeout() {
                        tally.abandoned.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            tally.retries.fetch_add(1, Ordering::Relaxed);
            assert!(
                Instant::now() < deadline,
                "loader {loader} window {w} never acknowledged"
            );
            tokio::time::sleep(Duration::from_millis(20 + rng.below(200))).await;
        }
        acked.extend((start..start + size).map(|n| event(loader, n)["event_id"].to_string()));
        // The next window starts inside this one (or right after it).
        start += 1 + rng.below(size);
    }
    acked
}

#[tokio::test]
async fn acknowledged_events_are_exported_exactly_once_through_crashes() {
    let seed = std::env::var("LOGPORT_CHAOS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("LOGPORT_CHAOS_SEED={seed}");
    let ch = PrivateClickHouse::launch();
    let pg = PgDatabase::create();
    let files = tempfile::tempdir().unwrap();
    let shared = Options::default()
        .clickhouse_url(&ch.url)
        .job_store_url(&pg.url)
        .object_store_dir(files.path())
        .env("LOGPORT_LEASE", "2s")
        .env("LOGPORT_HEARTBEAT", "500ms")
        .env("LOGPORT_INGEST_BATCH_WAIT", "50ms");
    let mut a = Service::start_with(shared.clone()).await;
    let b = Service::start_with(shared.clone().clickhouse_database(&a.database)).await;

    let bases = [a.base.clone(), b.base.clone()];
    let stop = Arc::new(AtomicBool::new(false));
    let tally = Arc::new(Tally::default());
    let loaders: Vec<_> = (0..LOADERS)
        .map(|l| {
            tokio::spawn(load(
                l,
                seed,
                bases.clone(),
                Arc::clone(&stop),
                Arc::clone(&tally),
            ))
        })
        .collect();
    let chaos = {
        let stop = Arc::clone(&stop);
        async move {
            let mut rng = Rng(seed);
            let pause = |rng: &mut Rng| Duration::from_millis(300 + rng.below(1200));
            for _ in 0..ROUNDS {
                tokio::time::sleep(pause(&mut rng)).await;
                // A replica dies mid-load, and comes back.
                a.kill();
                tokio::time::sleep(pause(&mut rng)).await;
                a.restart().await;
                tokio::time::sleep(pause(&mut rng)).await;
                // ClickHouse dies mid-load, and comes back.
                ch.kill();
                tokio::time::sleep(pause(&mut rng)).await;
                ch.start();
            }
            // Some load after the last crash too.
            tokio::time::sleep(pause(&mut rng)).await;
            stop.store(true, Ordering::SeqCst);
            (a, ch)
        }
    };
    let loading = async {
        let mut acked = Vec::new();
        for l in loaders {
            acked.extend(l.await.unwrap());
        }
        acked
    };
    let (acked, (a, _ch)) = tokio::join!(loading, chaos);

    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for id in acked {
        want.insert(id.trim_matches('"').to_string(), 1);
    }
    for svc in [&a, &b] {
        let got = svc.exported_event_ids(ACME, "2026-11-10").await;
        let doubled: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
        let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
        let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
        assert!(
            doubled.is_empty() && missing.is_empty() && extra.is_empty(),
            "seed {seed}: {} doubled {:?}, {} missing {:?}, {} never acknowledged {:?}",
            doubled.len(),
            doubled.iter().take(5).collect::<Vec<_>>(),
            missing.len(),
            missing.iter().take(5).collect::<Vec<_>>(),
            extra.len(),
            extra.iter().take(5).collect::<Vec<_>>(),
        );
    }
    let (retries, abandoned) = (
        tally.retries.load(Ordering::Relaxed),
        tally.abandoned.load(Ordering::Relaxed),
    );
    println!(
        "{} events, {retries} retries, {abandoned} requests abandoned",
        want.len()
    );
    assert!(
        want.len() > 1000,
        "a load worth the name: {} events",
        want.len()
    );
    assert!(
        abandoned > 0 && retries > abandoned,
        "the chaos reached the loaders"
    );
}
