//! The crash test: three signoff replicas behind one webhook address, all competing
//! for the leader Lease (3 s), while hundreds of held requests escalate through
//! five 3-second tiers and nobody approves. The leader is killed with SIGKILL at
//! random moments (seeded; `SIGNOFF_CRASH_SEED` replays a run) and restarted.
//! Counted: requests lost (never final), tiers skipped, phases or tiers that moved
//! backwards, and duplicate notifications per failover by idempotency key at the
//! receiver. 200 escalations in `make test`, 1,000 in `make chaos`. Own test
//! binary, because it kills signoff.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use signoff::crd::{ApprovalRequest, Phase};
use signoff_testenv::{CONTROLLER, Supervised, context_of, free_port, tail};

use common::esc::*;
use common::report::{self, Figure};
use common::*;

const SECTION: &str = "4 crashes";
/// Lease duration of every replica: the failover takes about this long.
const LEASE: &str = "3s";
const REPLICAS: usize = 3;
/// Five tiers of 3 s: how long one chain runs without failovers.
const CHAIN: Duration = Duration::from_secs(15);

/// A small seeded generator (splitmix64): kill times are reproducible from the seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A duration in [lo, hi) milliseconds.
    fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo + self.next() % (hi - lo))
    }
}

/// One running replica: serves the webhook and competes for the Lease.
struct Replica {
    identity: String,
    webhook_port: u16,
    process: Supervised,
}

/// The replicas, and the webhook ports the proxy may forward to.
struct Fleet {
    proxy_port: u16,
    backends: Arc<Mutex<Vec<u16>>>,
    slots: Vec<Option<Replica>>,
    started: u32,
    /// Logs of every replica ever started, to show on failure.
    logs: Vec<PathBuf>,
}

impl Fleet {
    /// Start a replica in `slot` with a fresh identity (as a new pod would get).
    fn start(&mut self, slot: usize) {
        self.started += 1;
        let identity = format!("replica-{slot}-{}", self.started);
        let port = free_port().unwrap();
        let (addr, url) = (format!("127.0.0.1:{port}"), format!("https://127.0.0.1:{}/validate", self.proxy_port));
        let health = format!("127.0.0.1:{}", free_port().unwrap());
        let args = [
            "run",
            "--context",
            context_of(CONTROLLER),
            "--webhook-addr",
            &addr,
            "--webhook-url",
            &url,
            "--health-addr",
            &health,
            "--tls-ip",
            "127.0.0.1",
            "--lease-duration",
            LEASE,
            "--identity",
            &identity,
            // 200 requests by one requester on purpose, each page counted: flood
            // control (tests/escalation.rs) is not what this test is about.
            "--max-pending-per-requester=0",
            "--coalesce-window=0s",
        ];
        let kubeconfig = cp().kubeconfig.display().to_string();
        let log = cp().dir.join(format!("{identity}.log"));
        let env = [("KUBECONFIG", kubeconfig.as_str()), ("RUST_LOG", "info")];
        let program = Path::new(env!("CARGO_BIN_EXE_signoff"));
        let process = Supervised::spawn(&identity, program, &args, &env, &log, None).unwrap_or_else(|e| panic!("{e}"));
        self.backends.lock().unwrap().push(port);
        self.logs.push(log);
        self.slots[slot] = Some(Replica { identity, webhook_port: port, process });
    }

    /// SIGKILL the replica in `slot` (the proxy stops choosing it first).
    fn kill(&mut self, slot: usize) {
        let mut replica = self.slots[slot].take().expect("a replica in this slot");
        self.backends.lock().unwrap().retain(|p| *p != replica.webhook_port);
        replica.process.kill();
    }

    /// Stop the replica in `slot` gracefully (SIGTERM) and wait until it exits.
    fn stop(&mut self, slot: usize) {
        let mut replica = self.slots[slot].take().expect("a replica in this slot");
        self.backends.lock().unwrap().retain(|p| *p != replica.webhook_port);
        replica.process.stop();
    }

    fn slot_of(&self, identity: &str) -> Option<usize> {
        self.slots.iter().position(|r| r.as_ref().is_some_and(|r| r.identity == identity))
    }

    /// The last lines of every replica's log, for a failure message.
    fn log_tails(&self) -> String {
        self.logs
            .iter()
            .map(|l| format!("--- {}\n{}", l.display(), tail(&std::fs::read_to_string(l).unwrap_or_default(), 8)))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A TCP proxy on loopback in front of the replicas' webhook ports, as a
/// Kubernetes Service would be: each connection goes to the next replica that
/// accepts it (round robin), so the webhook stays reachable while one is down.
async fn proxy(listener: tokio::net::TcpListener, backends: Arc<Mutex<Vec<u16>>>) {
    let next = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((mut inbound, _)) = listener.accept().await else { continue };
        let (backends, next) = (backends.clone(), next.clone());
        tokio::spawn(async move {
            let ports = backends.lock().unwrap().clone();
            let first = next.fetch_add(1, Ordering::Relaxed);
            for i in 0..ports.len() {
                let port = ports[(first + i) % ports.len()];
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    return;
                }
            }
        });
    }
}

/// What the watch saw of one request.
#[derive(Default)]
struct Track {
    phase: Phase,
    tiers: Vec<u32>,
    /// Each move backwards: a final phase left, a lane's tier decreased, a lane vanished.
    backwards: Vec<String>,
}

fn observe(tracks: &Mutex<HashMap<String, Track>>, ar: &ApprovalRequest) {
    let status = ar.status.clone().unwrap_or_default();
    let tiers: Vec<u32> = status.lanes.iter().map(|l| l.tier).collect();
    let mut tracks = tracks.lock().unwrap();
    let track = tracks.entry(ar.metadata.name.clone().unwrap_or_default()).or_default();
    if track.phase.is_terminal() && status.phase != track.phase {
        track.backwards.push(format!("phase {:?} -> {:?}", track.phase, status.phase));
    }
    if tiers.len() < track.tiers.len() {
        track.backwards.push(format!("lanes {:?} -> {tiers:?}", track.tiers));
    }
    for (lane, (before, now)) in track.tiers.iter().zip(&tiers).enumerate() {
        if now < before {
            track.backwards.push(format!("lane {lane} tier {before} -> {now}"));
        }
    }
    track.phase = status.phase;
    track.tiers = tiers;
}

/// Create a held ConfigMap `change-i` as alice; returns the ApprovalRequest's name.
/// A webhook call cut by a kill fails closed: that create is retried.
async fn hold_one(api: Api<ConfigMap>, i: usize, class: &'static str) -> String {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("change-{i}")),
            labels: Some([("class".to_string(), class.to_string())].into()),
            ..Default::default()
        },
        data: Some([("n".to_string(), i.to_string())].into()),
        ..Default::default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match api.create(&PostParams::default(), &cm).await {
            Err(kube::Error::Api(e)) if e.message.contains("held for approval") => {
                let start = e.message.find("ApprovalRequest ").unwrap() + "ApprovalRequest ".len();
                let path = e.message[start..].split_whitespace().next().unwrap();
                return path.split('/').nth(1).unwrap().to_string();
            }
            Ok(_) => panic!("change-{i} was admitted without approval"),
            Err(e) => {
                assert!(Instant::now() < deadline, "change-{i} never held within 60 s; last error: {e}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The current leader, if its Lease is held by a live replica and was renewed recently.
async fn leader(leases: &Api<Lease>, fleet: &Fleet) -> Option<String> {
    let spec = leases.get_opt("signoff-leader").await.ok()??.spec?;
    let holder = spec.holder_identity?;
    let renewed = spec.renew_time?.0;
    let fresh = Timestamp::now().duration_since(renewed).as_secs_f64() < f64::from(spec.lease_duration_seconds?);
    (fresh && fleet.slot_of(&holder).is_some()).then_some(holder)
}

/// One SIGKILL of the leader.
struct Kill {
    at: Timestamp,
    identity: String,
    /// Kill until another replica held the Lease.
    leaderless: Option<f64>,
}

/// Kill the leader at random moments until `stop_at`; each kill waits until a new
/// leader holds the Lease, then 2-6 s more. Returns the kills and the fleet.
async fn killer(mut fleet: Fleet, leases: Api<Lease>, seed: u64, stop_at: Instant) -> (Vec<Kill>, Fleet) {
    let mut rng = Rng(seed);
    let mut kills: Vec<Kill> = Vec::new();
    loop {
        let waited = Instant::now();
        let holder = loop {
            if let Some(holder) = leader(&leases, &fleet).await {
                break holder;
            }
            assert!(
                waited.elapsed() < Duration::from_secs(60),
                "no replica took the Lease within 60 s after the kill\n{}",
                fleet.log_tails()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if let Some(last) = kills.last_mut() {
            last.leaderless = Some(Timestamp::now().duration_since(last.at).as_secs_f64());
            eprintln!("crash: {holder} leads {:.1}s after the kill of {}", last.leaderless.unwrap(), last.identity);
        }
        tokio::time::sleep(rng.millis(2_000, 6_000)).await;
        if Instant::now() >= stop_at {
            return (kills, fleet);
        }
        let Some(holder) = leader(&leases, &fleet).await else { continue };
        let slot = fleet.slot_of(&holder).unwrap();
        let at = Timestamp::now();
        fleet.kill(slot);
        eprintln!("crash: SIGKILL {holder} (kill {})", kills.len() + 1);
        kills.push(Kill { at, identity: holder, leaderless: None });
        fleet.start(slot);
    }
}

/// Duplicates by idempotency key, each attributed to the failover it arrived
/// after: window k runs from the k-th change of the Lease holder to the next
/// (window 0: the first leader, before any failover). A failover is a kill or a
/// leader that lost its Lease (renewal too slow under load). Returns (total
/// duplicates, max duplicates of one key in one window, duplicates per window,
/// the key and window of the max, duplicates with no failover since the previous
/// delivery of the same key).
fn duplicates(got: &[Received], failovers: &[Timestamp]) -> (usize, usize, Vec<usize>, String, usize) {
    let mut by_key: BTreeMap<&str, Vec<Timestamp>> = BTreeMap::new();
    for r in got {
        by_key.entry(&r.key).or_default().push(r.at);
    }
    let mut per_window = vec![0usize; failovers.len() + 1];
    let (mut total, mut max, mut worst, mut no_failover) = (0, 0, String::new(), 0);
    let window_of = |at: &Timestamp| failovers.iter().filter(|f| **f <= *at).count();
    for (key, mut times) in by_key {
        times.sort();
        let mut in_window: BTreeMap<usize, usize> = BTreeMap::new();
        for pair in times.windows(2) {
            let (before, at) = (&pair[0], &pair[1]);
            let window = window_of(at);
            no_failover += usize::from(window_of(before) == window);
            *in_window.entry(window).or_default() += 1;
            per_window[window] += 1;
            total += 1;
        }
        for (window, n) in in_window {
            if n > max {
                (max, worst) = (n, format!("{key} in window {window}"));
            }
        }
    }
    (total, max, per_window, worst, no_failover)
}

/// When each replica believed it led, from its log ("leader election changed"):
/// (identity, from, until); a killed replica leads until its kill, a live one until `end`.
fn leading_intervals(logs: &[PathBuf], kills: &[Kill], end: Timestamp) -> Vec<(String, Timestamp, Timestamp)> {
    let mut out = Vec::new();
    for log in logs {
        let identity = log.file_stem().unwrap().to_string_lossy().into_owned();
        let until = kills.iter().find(|k| k.identity == identity).map_or(end, |k| k.at);
        let mut since = None;
        for line in std::fs::read_to_string(log).unwrap_or_default().lines() {
            let Ok(j) = serde_json::from_str::<serde_json::Value>(line) else { continue };
            if j["fields"]["message"] != "leader election changed" {
                continue;
            }
            let Some(at) = j["timestamp"].as_str().and_then(|t| t.parse::<Timestamp>().ok()) else { continue };
            match (j["fields"]["leading"].as_bool(), since) {
                (Some(true), None) => since = Some(at),
                (Some(false), Some(from)) => {
                    out.push((identity.clone(), from, at));
                    since = None;
                }
                _ => {}
            }
        }
        if let Some(from) = since {
            out.push((identity, from, until.max(from)));
        }
    }
    out
}

/// Total time two replicas both believed they led (split brain), in seconds.
fn split_brain(intervals: &[(String, Timestamp, Timestamp)]) -> f64 {
    let mut total = 0.0;
    for (i, (a, a0, a1)) in intervals.iter().enumerate() {
        for (b, b0, b1) in &intervals[i + 1..] {
            let (from, until) = ((*a0).max(*b0), (*a1).min(*b1));
            if a != b && until > from {
                total += until.duration_since(from).as_secs_f64();
            }
        }
    }
    total
}

#[test]
fn sigkill_the_leader_during_escalations_loses_nothing_skips_nothing_and_never_goes_back() {
    let started = Instant::now();
    setup();
    let ns = esc_namespace("esc-owners");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
    rt.block_on(crash(ns, started));
}

async fn crash(ns: String, started: Instant) {
    let requests = std::env::var("SIGNOFF_CRASH_REQUESTS").ok().and_then(|s| s.parse().ok());
    let requests: usize = requests.unwrap_or(if report::chaos() { 1000 } else { 200 });
    let interval = Duration::from_millis(500);
    let seed = std::env::var("SIGNOFF_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| Timestamp::now().as_nanosecond() as u64);
    eprintln!("crash: seed {seed} (replay with SIGNOFF_CRASH_SEED={seed}); {requests} requests, {REPLICAS} replicas");

    // The replicas behind one proxy address; the first creates the shared TLS Secret.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backends = Arc::new(Mutex::new(Vec::new()));
    let mut fleet = Fleet {
        proxy_port: listener.local_addr().unwrap().port(),
        backends: backends.clone(),
        slots: (0..REPLICAS).map(|_| None).collect(),
        started: 0,
        logs: Vec::new(),
    };
    let proxy_task = tokio::spawn(proxy(listener, backends));
    fleet.start(0);
    let probe = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: probe\n  namespace: {ns}\n  labels: {{class: routine}}\n"
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let (ok, _, err) = cp().kubectl_run("alice", &["apply", "--dry-run=server", "-f", "-"], Some(&probe)).unwrap();
        if ok && err.contains("would be held") {
            break;
        }
        assert!(Instant::now() < deadline, "the webhook never answered through the proxy\n{}", fleet.log_tails());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for slot in 1..REPLICAS {
        fleet.start(slot);
    }

    // Watch every request from the start: each observed state is checked against the last.
    let admin = cp().client(ADMIN).await.unwrap();
    let ars: Api<ApprovalRequest> = Api::namespaced(admin.clone(), &ns);
    let tracks: Arc<Mutex<HashMap<String, Track>>> = Arc::default();
    let watch_task = {
        let (ars, tracks) = (ars.clone(), tracks.clone());
        tokio::spawn(async move {
            let stream = watcher(ars, watcher::Config::default()).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(ar) | watcher::Event::InitApply(ar)) = event {
                    observe(&tracks, &ar);
                }
            }
        })
    };

    // Every change of the Lease holder, as it happens: the failovers.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), "signoff-system");
    let holders: Arc<Mutex<Vec<(Timestamp, String)>>> = Arc::default();
    let lease_task = {
        let (leases, holders) = (leases.clone(), holders.clone());
        tokio::spawn(async move {
            let config = watcher::Config::default().fields("metadata.name=signoff-leader");
            let stream = watcher(leases, config).default_backoff();
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                if let Ok(watcher::Event::Apply(lease) | watcher::Event::InitApply(lease)) = event {
                    let holder = lease.spec.and_then(|s| s.holder_identity).unwrap_or_default();
                    let mut holders = holders.lock().unwrap();
                    if holders.last().is_none_or(|(_, h)| *h != holder) {
                        holders.push((Timestamp::now(), holder));
                    }
                }
            }
        })
    };

    // Kill the leader throughout: until the last request's chain is well under way.
    let creating = interval * requests as u32;
    let stop_killing = Instant::now() + creating + CHAIN * 2 / 3;
    let kill_task = tokio::spawn(killer(fleet, leases.clone(), seed, stop_killing));

    // Held requests, one every `interval`; every fourth notifies all tiers at once.
    let alice = cp().client("alice").await.unwrap();
    let configmaps: Api<ConfigMap> = Api::namespaced(alice, &ns);
    let begin = tokio::time::Instant::now();
    let mut creates = Vec::new();
    for i in 0..requests {
        tokio::time::sleep_until(begin + interval * i as u32).await;
        let class = if i % 4 == 3 { "destructive" } else { "routine" };
        creates.push(tokio::spawn(hold_one(configmaps.clone(), i, class)));
    }
    let mut names = Vec::new();
    for c in creates {
        names.push(c.await.unwrap());
    }
    let unique: BTreeSet<&String> = names.iter().collect();
    assert_eq!(unique.len(), requests, "one ApprovalRequest per change");
    eprintln!("crash: {requests} requests held in {:.0}s", begin.elapsed().as_secs_f64());

    let (kills, fleet) = kill_task.await.unwrap();
    let last_kill = kills.last().map(|k| k.at).unwrap_or_else(Timestamp::now);
    eprintln!("crash: {} leader kills; waiting for every chain to finish", kills.len());

    // Lost: not final (per the watch) long after the last kill. Chains are 15 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let pending = {
            let tracks = tracks.lock().unwrap();
            names.iter().filter(|n| !tracks.get(*n).is_some_and(|t| t.phase.is_terminal())).count()
        };
        if pending == 0 || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Let a late duplicate (a step repeated after the last failover) arrive before counting.
    tokio::time::sleep(Duration::from_secs(2)).await;
    watch_task.abort();
    lease_task.abort();
    let failovers: Vec<Timestamp> = holders.lock().unwrap().iter().skip(1).map(|(at, _)| *at).collect();
    let split = split_brain(&leading_intervals(&fleet.logs, &kills, Timestamp::now()));
    let listed: HashMap<String, ApprovalRequest> = ars
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|ar| (ar.metadata.name.clone().unwrap_or_default(), ar))
        .collect();
    let final_phase = |name: &str| listed.get(name).and_then(|ar| ar.status.as_ref()).map(|s| s.phase);
    // Nobody approves: Expired is the only final phase a request may reach.
    let lost: Vec<&String> = names.iter().filter(|n| final_phase(n) != Some(Phase::Expired)).collect();

    // Backwards: anything the watch saw move back.
    let backwards: Vec<String> = {
        let tracks = tracks.lock().unwrap();
        names
            .iter()
            .filter_map(|n| tracks.get(n).map(|t| (n, &t.backwards)))
            .flat_map(|(n, b)| b.iter().map(move |b| format!("{n}: {b}")))
            .collect()
    };

    // Skipped: each request's receiver must have every tier 0..=last, in order of first
    // arrival, and its lane must end on the last tier; the admins must hear of the expiry.
    let ours: BTreeSet<&str> = names.iter().map(String::as_str).collect();
    let got: Vec<Received> = setup()
        .receiver
        .received("/")
        .into_iter()
        .filter(|r| r.body["request"]["name"].as_str().is_some_and(|n| ours.contains(n)))
        .collect();
    let mut per_request: HashMap<&str, Vec<&Received>> = HashMap::new();
    for r in &got {
        per_request.entry(r.body["request"]["name"].as_str().unwrap()).or_default().push(r);
    }
    let (mut skipped, mut skips, mut no_expiry_notice) = (0usize, Vec::new(), Vec::new());
    for name in &names {
        let mut mine = per_request.remove(name.as_str()).unwrap_or_default();
        mine.sort_by_key(|r| r.at);
        let mut order: Vec<u64> = Vec::new();
        for r in mine.iter().filter(|r| r.path.starts_with("/user/") && r.body["kind"] == "Escalation") {
            let tier = r.body["tier"].as_u64().unwrap();
            if !order.contains(&tier) {
                order.push(tier);
            }
        }
        let lane = listed.get(name).and_then(|ar| ar.status.as_ref()).and_then(|s| s.lanes.first());
        let expired = final_phase(name) == Some(Phase::Expired);
        // A finished chain must cover every tier and end on the last; an unfinished one
        // (counted as lost) every tier below the highest it reached.
        let (tiers, reached) = match lane {
            Some(l) if expired => (u64::from(l.tiers), u64::from(l.tiers)),
            _ => (5, order.iter().max().map_or(0, |t| t + 1)),
        };
        let missing = (0..reached).filter(|t| !order.contains(t)).count();
        let out_of_order = usize::from(!order.is_sorted());
        let short = match lane {
            Some(l) if expired => (tiers - 1 - u64::from(l.tier)) as usize,
            _ => 0,
        };
        if missing + out_of_order + short > 0 {
            skipped += missing + out_of_order + short;
            skips.push(format!("{name}: tiers notified {order:?}, lane {:?}", lane.map(|l| l.tier)));
        }
        if expired && !mine.iter().any(|r| r.body["kind"] == "Expired" && r.body.get("outcome").is_none()) {
            no_expiry_notice.push(name.clone());
        }
    }

    let (dup_total, dup_max, dup_windows, dup_worst, dup_no_failover) = duplicates(&got, &failovers);
    let key_of_worst = dup_worst.split(' ').next().unwrap_or_default();
    let zero = kills.first().map_or_else(Timestamp::now, |k| k.at);
    let rel = |t: Timestamp| format!("{:.2}", t.duration_since(zero).as_secs_f64());
    eprintln!(
        "crash: kills at {:?}; failovers at {:?}; deliveries of the worst key at {:?} (s from the first kill)",
        kills.iter().map(|k| rel(k.at)).collect::<Vec<_>>(),
        failovers.iter().map(|t| rel(*t)).collect::<Vec<_>>(),
        got.iter().filter(|r| r.key == key_of_worst).map(|r| rel(r.at)).collect::<Vec<_>>()
    );
    let failover = |k: &Kill| {
        // The first delivery at least 250 ms after the kill: one already on the wire
        // when the old leader died is not the new leader's.
        let after = k.at + jiff::SignedDuration::from_millis(250);
        got.iter().map(|r| r.at).filter(|t| *t >= after).min().map(|t| t.duration_since(k.at).as_secs_f64())
    };
    let longest_gap = kills.iter().filter_map(failover).fold(0.0, f64::max);
    let longest_leaderless = kills.iter().filter_map(|k| k.leaderless).fold(0.0, f64::max);
    let max_in_one_failover = dup_windows.iter().skip(1).max().copied().unwrap_or(0);
    let wall = started.elapsed().as_secs_f64();
    eprintln!(
        "crash: {} notifications for our requests; duplicates per window {dup_windows:?}; worst {dup_worst}; last kill at {last_kill}",
        got.len()
    );

    report::record(
        "crash",
        &[
            Figure::count(SECTION, "escalations (held requests, 5 tiers of 3 s each)", requests),
            Figure::count(SECTION, "replicas (lease 3 s)", REPLICAS),
            Figure::new(SECTION, "leader kills (SIGKILL)", kills.len(), ">= 5", kills.len() >= 5),
            Figure::count(
                SECTION,
                "failovers (Lease holder changes: kills and Leases lost under load)",
                failovers.len(),
            ),
            Figure::count(SECTION, "split brain (two replicas leading at once), s", format!("{split:.1}")),
            Figure::new(SECTION, "requests lost (never final)", lost.len(), "0", lost.is_empty()),
            Figure::new(SECTION, "tiers skipped", skipped, "0", skipped == 0),
            Figure::new(SECTION, "phases or tiers moved backwards", backwards.len(), "0", backwards.is_empty()),
            Figure::new(
                SECTION,
                "expired requests the admins never heard of",
                no_expiry_notice.len(),
                "0",
                no_expiry_notice.is_empty(),
            ),
            Figure::count(SECTION, "duplicate notifications, total (by idempotency key)", dup_total),
            Figure::new(
                SECTION,
                "duplicates with no failover since the key's previous delivery",
                dup_no_failover,
                "0",
                dup_no_failover == 0,
            ),
            Figure::count(SECTION, "duplicate notifications in the worst failover (all requests)", max_in_one_failover),
            Figure::new(SECTION, "max duplicates of one notification per failover", dup_max, "<= 1", dup_max <= 1),
            Figure::count(
                SECTION,
                "longest leaderless time (kill -> new Lease holder), s",
                format!("{longest_leaderless:.1}"),
            ),
            Figure::count(SECTION, "longest failover gap (kill -> next notification), s", format!("{longest_gap:.1}")),
            Figure::count(SECTION, "wall time, s", format!("{wall:.0}")),
        ],
    );

    // Keep the replicas' logs: the control plane's directory goes when this binary exits.
    let kept = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("crash-logs");
    let _ = std::fs::remove_dir_all(&kept);
    std::fs::create_dir_all(&kept).unwrap();
    for log in &fleet.logs {
        let _ = std::fs::copy(log, kept.join(log.file_name().unwrap()));
    }
    let received: String = got
        .iter()
        .map(|r| {
            let b = &r.body;
            format!("{} {} {} {} {} {}\n", r.at, r.key, r.path, b["kind"], b["tier"], b["request"]["name"])
        })
        .collect();
    std::fs::write(kept.join("received.txt"), received).unwrap();
    let kill_times: String = kills.iter().map(|k| format!("{} {}\n", k.at, k.identity)).collect();
    std::fs::write(kept.join("kills.txt"), kill_times).unwrap();
    eprintln!("crash: replica logs, deliveries and kills kept in {}", kept.display());
    let fleet_logs = fleet.log_tails();
    assert!(kills.len() >= 5, "the leader was killed only {} times", kills.len());
    assert!(lost.is_empty(), "{} requests never reached Expired: {lost:?}\n{fleet_logs}", lost.len());
    assert!(backwards.is_empty(), "moved backwards: {backwards:?}");
    assert!(skipped == 0, "{skipped} tiers skipped: {skips:?}");
    assert!(no_expiry_notice.is_empty(), "admins never told of these expiries: {no_expiry_notice:?}");
    // A failover repeats at most the step the dead leader was in, once. (Duplicates
    // with no failover, from a delivery retried after a lost answer, are a figure.)
    assert!(
        dup_max <= 1,
        "a notification arrived {} times more in one failover window; worst: {dup_worst}; duplicates per window \
         {dup_windows:?}\n{fleet_logs}",
        dup_max
    );

    // A graceful stop (SIGTERM, as in a rollout) hands the Lease over at once:
    // the stopped leader no longer holds it when it has exited.
    let mut fleet = fleet;
    let holder = eventually_leader(&leases, &fleet).await;
    let slot = fleet.slot_of(&holder).unwrap();
    fleet.stop(slot);
    let after = leases.get("signoff-leader").await.unwrap().spec.unwrap_or_default().holder_identity;
    assert_ne!(after.as_deref(), Some(holder.as_str()), "{holder} still holds the Lease after a graceful stop");
    proxy_task.abort();
    drop(fleet);
}

/// The current leader, waiting up to 60 s for one.
async fn eventually_leader(leases: &Api<Lease>, fleet: &Fleet) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(holder) = leader(leases, fleet).await {
            return holder;
        }
        assert!(Instant::now() < deadline, "no leader within 60 s\n{}", fleet.log_tails());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
