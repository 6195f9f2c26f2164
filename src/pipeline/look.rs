//! How the watcher looks at a service's members: its own heartbeat check and
//! the clients' confirmations, both the same conversation with a member
//! (see [`crate::farm::Talk`]) under the same deadline, so that a member whose
//! processes hang is dead to both; the connections they share; and the log
//! they write to. Nothing here decides: `crate::watch` does.

use crate::farm::{Check, Farm, Service, Talk};
use crate::transport::{self, AnyHost, Pool, Reach};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The watcher's events, through `tracing` (written by the logging module): one
/// per heartbeat failure, confirmation, decision and action.
#[derive(Clone, Copy)]
pub struct Log;

impl Log {
    pub fn event(&self, service: &str, event: &str, message: &str) {
        let trouble = matches!(
            event,
            "missed" | "not-confirmed" | "lease-lost" | "stalled" | "no-standby" | "failover-failed" | "sync-failed" | "fence-failed" | "held-back" | "lagging" | "skipped" | "no-clients" | "standby-down"
        );
        if trouble {
            tracing::warn!(scope = service, event, "{message}");
        } else {
            tracing::info!(scope = service, event, "{message}");
        }
    }
}

/// How many hosts the watcher works on at once: a failover's repoint and
/// its reads of the clients.
pub(super) const WATCH_PARALLEL: usize = 64;

/// The workstation's clock, in ms since the epoch, as the watcher logs and notes it.
pub(super) fn now_ms() -> u64 {
    jiff::Timestamp::now().as_millisecond().max(0) as u64
}

/// Where a member is reached: its address, or its name.
pub(super) fn address(farm: &Farm, member: &str) -> String {
    farm.hosts[member].address.clone().unwrap_or_else(|| member.to_string())
}

/// The TCP conversation of a check, from this workstation: the answer's
/// first line must hold `talk.expect` within `limit`.
async fn talk(address: &str, talk: &Talk, limit: Duration) -> bool {
    let conversation = async {
        let mut s = tokio::net::TcpStream::connect((address, talk.port)).await.ok()?;
        if !talk.send.is_empty() {
            s.write_all(talk.send.as_bytes()).await.ok()?;
        }
        let mut line = Vec::new();
        let mut buf = [0u8; 512];
        while !talk.expect.is_empty() && !line.contains(&b'\n') && line.len() < 8192 {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            line.extend_from_slice(&buf[..n]);
        }
        let first = line.split(|b| *b == b'\n').next().unwrap_or_default();
        Some(String::from_utf8_lossy(first).contains(talk.expect.as_str()))
    };
    matches!(tokio::time::timeout(limit, conversation).await, Ok(Some(true)))
}

/// One check of a member, within `limit`: a check that does not finish in
/// time is a failure.
pub(super) async fn check(conns: &mut Pool, farm: &Farm, svc: &Service, member: &str, limit: Duration) -> bool {
    let ok = match &svc.check {
        Check::Tcp(t) => talk(&address(farm, member), t, limit).await,
        Check::Ssh | Check::Command(_) => {
            let cmd = if let Check::Command(c) = &svc.check { c.as_str() } else { "true" };
            // A connection made before the member restarted fails though the member is
            // up: a held one gets one fresh try, so that a miss is the member's.
            let tries = if conns.hosts.contains_key(member) { 2 } else { 1 };
            let mut ok = false;
            for _ in 0..tries {
                ok = match conns.get_within(member, limit).await {
                    Some(h) => matches!(tokio::time::timeout(limit, h.command(cmd)).await, Ok(Ok(Some(c))) if c.status == 0),
                    None => false,
                };
                if ok {
                    break;
                }
                conns.forget(member);
            }
            ok
        }
    };
    if !ok {
        conns.forget(member);
    }
    ok
}

/// The clients' answers about one member.
pub(super) struct Answers {
    /// Clients that could not talk to it.
    pub down: usize,
    /// Clients that gave an answer (up or down).
    pub asked: usize,
    /// Connections made to ask, for the watcher to keep.
    pub made: Vec<(String, Arc<AnyHost>)>,
}

/// Asks every client at once, over a held connection or a new one, whether it
/// can talk to `member` itself, with the check's own conversation and
/// deadline. The answer is in once `needed` confirm: more clients never make
/// it slower; unconfirmed, every answer is counted.
pub(super) async fn ask_clients(farm: Arc<Farm>, held: BTreeMap<String, Arc<AnyHost>>, clients: Vec<String>, svc: &Service, member: &str, needed: usize, limit: Duration) -> Answers {
    let address = address(&farm, member);
    let talk = svc.check.talk(farm.ssh.port.unwrap_or(22));
    let mut ask = tokio::task::JoinSet::new();
    for c in clients {
        let (held, farm, address, talk) = (held.get(&c).cloned(), farm.clone(), address.clone(), talk.clone());
        ask.spawn(async move {
            let h = match held {
                Some(h) => h,
                None => Arc::new(tokio::time::timeout(limit, transport::connect(&farm, &c)).await.ok()?.ok()?),
            };
            // The client's own look is bounded by `limit` on the host; the
            // session around it gets room for the round trip.
            let r = tokio::time::timeout(limit * 3, h.reaches(&address, &talk, limit)).await.ok()?.ok()?;
            Some((c, h, r))
        });
    }
    let mut answers = Answers { down: 0, asked: 0, made: Vec::new() };
    while let Some(r) = ask.join_next().await {
        if let Ok(Some((c, h, r))) = r {
            answers.made.push((c, h));
            answers.asked += usize::from(matches!(r, Reach::Down | Reach::Up));
            answers.down += usize::from(r == Reach::Down);
        }
        if answers.down >= needed {
            break;
        }
    }
    answers
}

/// One heartbeat of the active member, bounded twice: by the time `left`
/// before its silence reaches `dead_after` (a beat cut there is a miss, so
/// the silence is judged when it ends, not up to a beat later), and by four
/// deadlines whatever a dead member's connection does (a stalled beat drops
/// the connections, to be made again).
pub(super) async fn heartbeat(conns: &mut Pool, farm: &Farm, svc: &Service, active: &str, left: Duration, log: Log) -> bool {
    let limit = svc.deadline();
    let stall = limit * 4;
    match tokio::time::timeout(stall.min(left), check(conns, farm, svc, active, limit)).await {
        Ok(ok) => ok,
        Err(_) if left < stall => {
            conns.forget(active);
            false
        }
        Err(_) => {
            log.event(&svc.name, "stalled", &format!("the heartbeat of {active} took longer than {stall:?}; its connections are made again"));
            conns.forget_all();
            false
        }
    }
}

/// Each standby and whether it may take over: it answers the heartbeat's
/// check, and (with `sync`) its last good sync is within `max_lag`.
pub(super) async fn healthy_standbys(conns: &mut Pool, farm: &Farm, svc: &Service, active: &str, last_sync: &BTreeMap<String, (Instant, u64)>, log: Log) -> Vec<(String, bool)> {
    let mut healthy = Vec::new();
    for m in svc.members.iter().filter(|m| *m != active) {
        let mut ok = check(conns, farm, svc, m, svc.deadline()).await;
        if ok && !svc.sync.is_empty() && last_sync.get(m).is_none_or(|(t, _)| t.elapsed() > svc.max_lag) {
            log.event(&svc.name, "lagging", &format!("{m} answers, but its last good sync is older than max_lag {:?}: not promoted", svc.max_lag));
            ok = false;
        }
        healthy.push((m.clone(), ok));
    }
    healthy
}

/// What is asked at the active member's first missed beat, so that it is in
/// hand when `dead_after` ends and a failover costs only the move: the
/// clients' answers about the member, and which standbys could take over.
pub(super) struct Early {
    clients: tokio::task::JoinHandle<Answers>,
    standbys: tokio::task::JoinHandle<Vec<(String, bool)>>,
}

impl Early {
    pub(super) fn ask(conns: &Pool, svc: &Service, active: &str, clients: Vec<String>, needed: usize, last_sync: &BTreeMap<String, (Instant, u64)>, log: Log) -> Early {
        let (farm, held) = (conns.farm.clone(), conns.hosts.clone());
        let (svc1, active1) = (svc.clone(), active.to_string());
        let clients = tokio::spawn(async move { ask_clients(farm, held, clients, &svc1, &active1, needed, svc1.deadline()).await });
        // The standbys' own connections, apart from the heartbeat's: the
        // active member's may be stuck in a beat meanwhile.
        let mut own = conns.only(|h| h != active);
        let (svc2, active2, last_sync) = (svc.clone(), active.to_string(), last_sync.clone());
        let standbys = tokio::spawn(async move {
            let farm = own.farm.clone();
            healthy_standbys(&mut own, &farm, &svc2, &active2, &last_sync, log).await
        });
        Early { clients, standbys }
    }

    /// The clients' answers, and the standbys' health once it is in.
    pub(super) async fn answers(self) -> (Answers, Option<Vec<(String, bool)>>) {
        let answers = self.clients.await.unwrap_or(Answers { down: 0, asked: 0, made: Vec::new() });
        (answers, self.standbys.await.ok())
    }

    /// The member answered again: nothing asked is needed.
    pub(super) fn abort(self) {
        self.clients.abort();
        self.standbys.abort();
    }
}
