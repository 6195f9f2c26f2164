//! The etcd lease of `farmctl watch` (`[watch] etcd = [...]`). Each
//! service's leadership is an etcd lease and one key, created in a
//! transaction only if absent; the key's creation revision is the fencing
//! token, checked on every host write as the members' epoch is. The holder
//! keeps its etcd lease alive every heartbeat and stops acting once it can no
//! longer prove, within the ttl, that the lease is still its own.

use super::lease::{Grant, HeldByAnother, Holding, Lease, Refusal};
use crate::error::{Error, ErrorKind, Result};
use crate::farm::{EtcdSettings, Service};
use super::spread::Spread;
use etcd_client::{Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, Identity, LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::time::timeout;

/// A connection to the farm's etcd, shared by the leases of its services.
#[derive(Clone)]
pub struct EtcdStore {
    members: Members,
    cfg: EtcdSettings,
}

/// One client per etcd member, used in turn: after a request fails, the
/// next one goes to the next member, so a member that is down costs one try
/// rather than every request (a balanced channel over all of them kept
/// sending to a killed member here, until the holder's lease ran out).
#[derive(Clone)]
struct Members {
    clients: Arc<Vec<Client>>,
    next: Arc<AtomicUsize>,
}

impl Members {
    fn client(&self) -> Client {
        self.clients[self.next.load(Ordering::SeqCst) % self.clients.len()].clone()
    }

    /// The member just asked did not answer: the next request asks the next one.
    fn failed(&self) {
        self.next.fetch_add(1, Ordering::SeqCst);
    }
}

/// An etcd error with its causes, as one line (a certificate that does not
/// match is named in its cause, not in the gRPC status).
fn describe(e: &etcd_client::Error) -> String {
    let mut text = match e {
        etcd_client::Error::GRpcStatus(s) => format!("{:?}: {}", s.code(), s.message()),
        other => other.to_string(),
    };
    let mut cause: Option<&(dyn std::error::Error + 'static)> = match e {
        etcd_client::Error::GRpcStatus(s) => std::error::Error::source(s),
        etcd_client::Error::TransportError(t) => std::error::Error::source(t),
        _ => None,
    };
    while let Some(c) = cause {
        let c_text = c.to_string();
        if !text.contains(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Whether an error says that the TLS setup is wrong (a certificate that
/// does not match, a client certificate refused): a mistake to fix, not a
/// store that is down for a while.
fn is_tls_mistake(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["certificate", "handshake", "tls", "unknownissuer", "alert"].iter().any(|w| t.contains(w))
}

/// Whether any endpoint takes a TCP connection within a second.
async fn tcp_answers(endpoints: &[String]) -> bool {
    for e in endpoints {
        let rest = e.split_once("://").map_or(e.as_str(), |(_, r)| r).trim_end_matches('/');
        if let Ok(Ok(_)) = timeout(Duration::from_secs(1), tokio::net::TcpStream::connect(rest)).await {
            return true;
        }
    }
    false
}

impl EtcdStore {
    /// Connects to the farm's etcd and asks it once: an endpoint that cannot
    /// be parsed, a file that cannot be read or a certificate that does not
    /// match is an error here; an etcd that does not answer yet is not (the
    /// watcher stands by until it does).
    pub async fn connect(cfg: &EtcdSettings) -> Result<EtcdStore> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(3))
            .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2))
            // A member without a leader answers at once instead of waiting.
            .with_require_leader(true);
        if let Some(tls) = &cfg.tls {
            let read = |p: &std::path::Path, what: &str| {
                std::fs::read(p).map_err(|e| Error::new(ErrorKind::Farm, format!("cannot read the etcd {what} {}: {e}", p.display())).hint("[watch] ca, cert and key are relative to the farm file"))
            };
            let mut t = TlsOptions::new().ca_certificate(Certificate::from_pem(read(&tls.ca, "CA file (ca)")?));
            if let Some((cert, key)) = &tls.identity {
                t = t.identity(Identity::from_pem(read(cert, "client certificate (cert)")?, read(key, "client key (key)")?));
            }
            opts = opts.with_tls(t);
        }
        let endpoints = cfg.endpoints.join(", ");
        let mut clients = Vec::new();
        for e in &cfg.endpoints {
            clients.push(Client::connect([e], Some(opts.clone())).await.map_err(|err| Error::new(ErrorKind::Unreachable, format!("cannot connect to etcd at {e}: {}", describe(&err))))?);
        }
        // Ask every member at once: one that answers is enough; a TLS refusal
        // from any is a mistake to fix. (All at once: three members down cost
        // one timeout, not three.)
        let mut asked = tokio::task::JoinSet::new();
        for c in &clients {
            let (mut c, prefix) = (c.clone(), cfg.prefix.clone());
            asked.spawn(async move { timeout(Duration::from_secs(3), c.get(prefix.as_bytes(), None)).await });
        }
        while let Some(answer) = asked.join_next().await {
            match answer {
                Ok(Ok(Ok(_))) => break,
                Ok(Ok(Err(e))) => {
                    let why = describe(&e);
                    // A member that takes the TCP connection and then drops the TLS
                    // one (etcd drops a client without the certificate it asks for)
                    // refused TLS too.
                    let dropped = cfg.tls.is_some() && why.contains("transport error") && tcp_answers(&cfg.endpoints).await;
                    if is_tls_mistake(&why) || dropped {
                        return Err(Error::new(ErrorKind::Refused, format!("etcd at {endpoints} refused the TLS connection: {why}"))
                            .hint("check [watch] ca (the CA that signed the etcd members' certificates, whose names must match the endpoints)")
                            .hint(if cfg.tls.as_ref().is_some_and(|t| t.identity.is_none()) { "an etcd started with --client-cert-auth drops clients without a certificate: set [watch] cert and key" } else { "check [watch] cert and key: etcd must trust the CA that signed them (its --trusted-ca-file)" }));
                    }
                }
                _ => {}
            }
        }
        Ok(EtcdStore { members: Members { clients: Arc::new(clients), next: Arc::new(AtomicUsize::new(0)) }, cfg: cfg.clone() })
    }

    /// Keeps this watcher's own key under `PREFIX/watchers/` while it runs
    /// (on an etcd lease of the ttl; revoked at a clean stop), and counts the
    /// live watchers' keys into `spread`: once before it returns, then every
    /// second.
    pub(super) async fn register(&self, holder: &str, spread: Arc<Spread>, mut interrupted: tokio::sync::watch::Receiver<bool>) {
        let mut reg = Registration { members: self.members.clone(), dir: format!("{}watchers/", self.cfg.prefix), holder: holder.to_string(), ttl: self.cfg.ttl.as_secs() as i64, lease: None };
        reg.round(&spread).await;
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = interrupted.changed() => {}
                }
                if *interrupted.borrow() {
                    if let Some(id) = reg.lease {
                        let _ = timeout(Duration::from_secs(1), reg.members.client().lease_revoke(id)).await;
                    }
                    return;
                }
                reg.round(&spread).await;
            }
        });
    }

    /// The lease of one service, for `holder`.
    pub(super) fn lease(&self, svc: &Service, holder: &str, limit: Duration) -> EtcdLease {
        EtcdLease {
            members: self.members.clone(),
            key: self.cfg.key(&svc.name),
            service: svc.name.clone(),
            holder: holder.to_string(),
            ttl: self.cfg.ttl,
            limit,
            endpoints: self.cfg.endpoints.join(", "),
            ours: None,
            last_error: String::new(),
        }
    }
}

/// A watcher's own key under `PREFIX/watchers/`, by which the watchers count each other.
struct Registration {
    members: Members,
    dir: String,
    holder: String,
    ttl: i64,
    lease: Option<i64>,
}

impl Registration {
    /// Keeps the key (made again if its lease ended), then counts the keys.
    async fn round(&mut self, spread: &Spread) {
        let limit = Duration::from_secs(1);
        let mut client = self.members.client();
        self.lease = match self.lease {
            // Each keep-alive opens its own short stream: once a second is enough.
            Some(id) => match timeout(limit, client.lease_keep_alive(id)).await {
                Ok(Ok(_)) => Some(id),
                Ok(Err(etcd_client::Error::LeaseKeepAliveError(m))) if m.contains("not found") => None,
                _ => {
                    self.members.failed();
                    Some(id)
                }
            },
            None => match timeout(limit, client.lease_grant(self.ttl, None)).await {
                Ok(Ok(g)) => match timeout(limit, client.put(format!("{}{}", self.dir, self.holder), "", Some(PutOptions::new().with_lease(g.id())))).await {
                    Ok(Ok(_)) => Some(g.id()),
                    _ => None,
                },
                _ => {
                    self.members.failed();
                    None
                }
            },
        };
        match timeout(limit, client.get(self.dir.as_bytes(), Some(GetOptions::new().with_prefix().with_count_only()))).await {
            Ok(Ok(r)) => spread.set_watchers(r.count().max(0) as usize),
            _ => self.members.failed(),
        }
    }
}

/// The etcd lease this watcher holds.
struct Ours {
    lease: i64,
    token: u64,
    /// When the last keep-alive that etcd answered was sent: the lease is
    /// ours until at least this plus the ttl. `None` until one is answered.
    proven: Option<Instant>,
    keeper: Option<(LeaseKeeper, LeaseKeepAliveStream)>,
    /// The note last written with the key, and when.
    note: String,
    noted: Instant,
}

/// How a keep-alive went.
enum KeepAlive {
    Alive,
    /// etcd no longer knows the lease: it expired, or was revoked.
    Gone,
    Failed(String),
}

/// One service's lease in etcd.
pub struct EtcdLease {
    members: Members,
    key: String,
    service: String,
    holder: String,
    ttl: Duration,
    /// The bound on each request.
    limit: Duration,
    endpoints: String,
    ours: Option<Ours>,
    last_error: String,
}

/// The note is written with the key at most this often (the heartbeat's
/// time in it changes every beat).
const NOTE_EVERY: Duration = Duration::from_secs(1);

impl EtcdLease {
    fn value(&self, note: &str) -> String {
        format!("{} {note}", self.holder)
    }

    /// A request that failed or timed out: remembered for [`Lease::silence`].
    fn failed(&mut self, why: String) -> std::result::Result<Grant, Refusal> {
        self.members.failed();
        self.last_error = why;
        Ok(Grant { places: 0, token: self.ours.as_ref().map_or(0, |o| o.token) })
    }

    fn revoke_later(&self, lease: i64) {
        let (mut client, limit) = (self.members.client(), self.limit);
        tokio::spawn(async move {
            let _ = timeout(limit, client.lease_revoke(lease)).await;
        });
    }

    /// Creates the key with a new etcd lease, if no one holds it.
    async fn take(&mut self, note: &str) -> std::result::Result<Grant, Refusal> {
        let ttl = self.ttl.as_secs() as i64;
        let mut client = self.members.client();
        // The lease's time runs from its grant at the latest: counted from
        // before the request, the proof never outlasts the lease.
        let sent = Instant::now();
        let granted = match timeout(self.limit, client.lease_grant(ttl, None)).await {
            Ok(Ok(g)) => g.id(),
            Ok(Err(e)) => return self.failed(describe(&e)),
            Err(_) => return self.failed(format!("no answer within {:?}", self.limit)),
        };
        let key = self.key.as_bytes().to_vec();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), self.value(note), Some(PutOptions::new().with_lease(granted)))])
            .or_else([TxnOp::get(key, None)]);
        let resp = match timeout(self.limit, client.txn(txn)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.revoke_later(granted);
                return self.failed(describe(&e));
            }
            Err(_) => {
                self.revoke_later(granted);
                return self.failed(format!("no answer within {:?}", self.limit));
            }
        };
        if resp.succeeded() {
            // The key was created by this transaction: its creation revision is the transaction's.
            let token = resp.header().map_or(0, |h| h.revision()).max(0) as u64;
            self.ours = Some(Ours { lease: granted, token, proven: Some(sent), keeper: None, note: note.to_string(), noted: Instant::now() });
            return Ok(Grant { places: 1, token });
        }
        self.revoke_later(granted);
        let kv = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let Some(kv) = kv else { return self.failed("the key was deleted while it was read".into()) };
        let held = self.holding_of(&mut client, &kv).await;
        if held.holder == self.holder {
            // This watcher's own key, from before etcd lost its quorum: it is
            // held again once a keep-alive proves its lease is still alive.
            self.ours = Some(Ours { lease: kv.lease(), token: held.token, proven: None, keeper: None, note: held.note, noted: Instant::now() });
            return self.renew(note).await;
        }
        Err(HeldByAnother { service: self.service.clone(), held }.into())
    }

    /// Who holds the key, as its value and its etcd lease say.
    async fn holding_of(&self, client: &mut Client, kv: &etcd_client::KeyValue) -> Holding {
        let value = String::from_utf8_lossy(kv.value()).into_owned();
        let (holder, note) = value.split_once(' ').unwrap_or((&value, ""));
        let left_ms = match timeout(self.limit, client.lease_time_to_live(kv.lease(), None)).await {
            Ok(Ok(t)) => t.ttl() * 1000,
            _ => -1,
        };
        Holding { place: format!("etcd key {}", self.key), holder: holder.to_string(), token: kv.create_revision().max(0) as u64, left_ms, note: note.to_string() }
    }

    async fn keep_alive(client: &mut Client, ours: &mut Ours) -> KeepAlive {
        let gone = |e: &etcd_client::Error| matches!(e, etcd_client::Error::LeaseKeepAliveError(m) if m.contains("not found"));
        match &mut ours.keeper {
            None => match client.lease_keep_alive(ours.lease).await {
                // Opening the stream sends one keep-alive and reads its answer.
                Ok(k) => {
                    ours.keeper = Some(k);
                    KeepAlive::Alive
                }
                Err(e) if gone(&e) => KeepAlive::Gone,
                Err(e) => KeepAlive::Failed(describe(&e)),
            },
            Some((keeper, stream)) => {
                if let Err(e) = keeper.keep_alive().await {
                    ours.keeper = None;
                    return KeepAlive::Failed(describe(&e));
                }
                match stream.message().await {
                    Ok(Some(r)) if r.ttl() > 0 => KeepAlive::Alive,
                    Ok(Some(_)) => KeepAlive::Gone,
                    Ok(None) => {
                        ours.keeper = None;
                        KeepAlive::Failed("the keep-alive stream ended".into())
                    }
                    Err(e) => {
                        ours.keeper = None;
                        KeepAlive::Failed(describe(&e))
                    }
                }
            }
        }
    }

    /// Keeps the held lease alive, and writes the note when it changed.
    async fn renew(&mut self, note: &str) -> std::result::Result<Grant, Refusal> {
        let Some(mut ours) = self.ours.take() else { return self.failed("no lease to keep alive".into()) };
        // A keep-alive stream on a member that just died fails: one more try
        // opens a new stream, on a member that answers.
        let (mut sent, mut alive) = (Instant::now(), KeepAlive::Gone);
        for _ in 0..2 {
            sent = Instant::now();
            // The stream kept from the last beat goes to the member that opened it.
            let mut client = self.members.client();
            alive = match timeout(self.limit, Self::keep_alive(&mut client, &mut ours)).await {
                Ok(a) => a,
                Err(_) => {
                    ours.keeper = None;
                    KeepAlive::Failed(format!("no answer within {:?}", self.limit))
                }
            };
            if matches!(alive, KeepAlive::Failed(_)) {
                self.members.failed();
            }
            if !matches!(alive, KeepAlive::Failed(_)) || ours.proven.is_some_and(|p| p.elapsed() + self.limit >= self.ttl) {
                break;
            }
        }
        match alive {
            KeepAlive::Alive => {}
            KeepAlive::Gone => {
                return Err(Refusal::Unproven(format!("the etcd lease of service {} expired: etcd had no keep-alive from this watcher for its ttl ({:?})", self.service, self.ttl)));
            }
            KeepAlive::Failed(why) => {
                let Some(proven) = ours.proven else {
                    // Never proven: nothing was done under it; it is simply not held.
                    return self.failed(why);
                };
                // The next proof could not come in time: stop acting before the
                // lease can end, rather than after.
                if proven.elapsed() + self.limit >= self.ttl {
                    return Err(Refusal::Unproven(format!("no answer from an etcd quorum for {:?} (the lease's ttl is {:?}): {why}", proven.elapsed(), self.ttl)));
                }
                let token = ours.token;
                self.ours = Some(ours);
                self.last_error = why;
                return Ok(Grant { places: 0, token });
            }
        }
        ours.proven = Some(sent);
        if ours.note != note && ours.noted.elapsed() >= NOTE_EVERY {
            let key = self.key.as_bytes().to_vec();
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, ours.token as i64)])
                .and_then([TxnOp::put(key, self.value(note), Some(PutOptions::new().with_lease(ours.lease)))]);
            match timeout(self.limit, self.members.client().txn(txn)).await {
                Ok(Ok(r)) if !r.succeeded() => {
                    return Err(Refusal::Unproven(format!("the etcd key {} is no longer this watcher's (its lease is alive, but the key was deleted or made again)", self.key)));
                }
                Ok(Ok(_)) => {
                    ours.note = note.to_string();
                    ours.noted = Instant::now();
                }
                // The note waits for the next beat; the lease itself was proven.
                _ => {}
            }
        }
        let token = ours.token;
        self.ours = Some(ours);
        Ok(Grant { places: 1, token })
    }
}

impl Lease for EtcdLease {
    async fn acquire(&mut self, note: &str) -> std::result::Result<Grant, Refusal> {
        if self.ours.is_some() {
            self.renew(note).await
        } else {
            self.take(note).await
        }
    }

    async fn release(&mut self) {
        if let Some(ours) = self.ours.take() {
            // Revoking the lease deletes the key: a standby takes it at once.
            let _ = timeout(self.limit, self.members.client().lease_revoke(ours.lease)).await;
        }
    }

    async fn holding(&mut self) -> Option<Holding> {
        let mut client = self.members.client();
        let Ok(Ok(mut got)) = timeout(self.limit, client.get(self.key.as_bytes(), None)).await else {
            self.members.failed();
            return None;
        };
        let kv = got.take_kvs().into_iter().next()?;
        Some(self.holding_of(&mut client, &kv).await)
    }

    fn silence(&self) -> String {
        format!("etcd ({}) does not answer for service {}: {}", self.endpoints, self.service, self.last_error)
    }
}
