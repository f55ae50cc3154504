//! The SWIM state machine, driven by hand and as a simulated cluster: N machines
//! over an in-memory network with seeded delays (1 to 5 ms) and optional loss,
//! in virtual time. No sockets, no threads, no sleeps: a seed replays a history.
//!
//! The simulated runtime does what the module doc asks of the real one: a ping,
//! gossip or sync is a request whose reply comes back over the network; an
//! indirect probe is a request to the helper, which pings the target itself
//! (the target's state machine is not involved, as with the `probe` RPC's bare
//! `ping`) and answers within `probe_timeout`. A paused node (SIGSTOP) holds
//! every message and timer addressed to it and handles them late on resume; a
//! stopped node drops them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rand::rngs::ChaCha8Rng;
use rand::{RngExt, SeedableRng};

use super::*;

fn addr(i: usize) -> NodeAddr {
    NodeAddr::new("10.0.0.1", 10000 + i as u16)
}

fn index(a: &NodeAddr) -> usize {
    usize::from(a.port - 10000)
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Kind {
    Ping(ProbeId),
    Gossip,
    Sync,
}

#[derive(Clone, Debug)]
enum Event {
    Tick {
        node: usize,
        generation: u64,
    },
    Push {
        from: usize,
        to: usize,
        kind: Kind,
        rows: Vec<MemberState>,
    },
    Reply {
        from: usize,
        to: usize,
        kind: Kind,
        rows: Vec<MemberState>,
    },
    ProbeRequest {
        requester: usize,
        via: usize,
        target: usize,
        probe: ProbeId,
    },
    BarePing {
        via: usize,
        target: usize,
        call: u64,
    },
    BarePong {
        via: usize,
        call: u64,
    },
    HelperTimeout {
        via: usize,
        call: u64,
    },
    ProbeAnswer {
        requester: usize,
        via: usize,
        probe: ProbeId,
        answer: bool,
    },
    IndirectTimeout {
        requester: usize,
        via: usize,
        probe: ProbeId,
    },
}

impl Event {
    /// The node whose process handles the event.
    fn owner(&self) -> usize {
        match self {
            Event::Tick { node, .. } => *node,
            Event::Push { to, .. } | Event::Reply { to, .. } => *to,
            Event::ProbeRequest { via, .. }
            | Event::BarePong { via, .. }
            | Event::HelperTimeout { via, .. } => *via,
            Event::BarePing { target, .. } => *target,
            Event::ProbeAnswer { requester, .. } | Event::IndirectTimeout { requester, .. } => {
                *requester
            }
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Run {
    Running,
    Paused,
    Stopped,
}

struct Node {
    swim: Swim,
    run: Run,
    held: Vec<Event>,
    generation: u64,
    tick_at: Option<Duration>,
}

struct HelperCall {
    requester: usize,
    probe: ProbeId,
    done: bool,
}

/// One recorded change: when, seen by which node, which row.
type Entry = (Duration, usize, MemberState);

struct Sim {
    now: Duration,
    config: Config,
    nodes: Vec<Node>,
    queue: BTreeMap<(Duration, u64), Event>,
    seq: u64,
    rng: ChaCha8Rng,
    loss: f64,
    log: Vec<Entry>,
    helper_calls: BTreeMap<u64, HelperCall>,
    answered: BTreeSet<(usize, ProbeId, usize)>,
    messages: u64,
    dropped: u64,
    /// The most rows in a ping or gossip push.
    largest_push: usize,
}

impl Sim {
    /// `n` nodes, none joined yet.
    fn new(n: usize, failure_timeout: Duration, seed: u64, loss: f64) -> Sim {
        let config = Config::from_failure_timeout(failure_timeout);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let nodes = (0..n)
            .map(|i| Node {
                swim: Swim::new(
                    addr(i),
                    1_000 + i as i64,
                    config.clone(),
                    rng.random(),
                    Duration::ZERO,
                ),
                run: Run::Running,
                held: Vec::new(),
                generation: 0,
                tick_at: None,
            })
            .collect();
        let mut sim = Sim {
            now: Duration::ZERO,
            config,
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            rng,
            loss,
            log: Vec::new(),
            helper_calls: BTreeMap::new(),
            answered: BTreeSet::new(),
            messages: 0,
            dropped: 0,
            largest_push: 0,
        };
        for i in 0..n {
            sim.reschedule(i);
        }
        sim
    }

    /// `n` nodes that all join through node 0 at time zero.
    fn joining(n: usize, failure_timeout: Duration, seed: u64, loss: f64) -> Sim {
        let mut sim = Sim::new(n, failure_timeout, seed, loss);
        for i in 1..n {
            sim.act(i, |swim, now| swim.join(&[addr(0)], now));
        }
        sim
    }

    /// Calls node `i` from outside (join, leave) and carries out its effects.
    fn act(&mut self, i: usize, call: impl FnOnce(&mut Swim, Duration) -> Vec<Effect>) {
        let effects = call(&mut self.nodes[i].swim, self.now);
        self.apply(i, effects);
        self.reschedule(i);
    }

    fn at(&mut self, time: Duration, event: Event) {
        self.seq += 1;
        self.queue.insert((time, self.seq), event);
    }

    /// Sends over the network: lost with chance `loss`, else delayed 1 to 5 ms.
    fn send(&mut self, event: Event) {
        self.messages += 1;
        if self.loss > 0.0 && self.rng.random_bool(self.loss) {
            self.dropped += 1;
            return;
        }
        let delay = ms(self.rng.random_range(1..=5));
        self.at(self.now + delay, event);
    }

    fn apply(&mut self, i: usize, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Ping { to, probe, updates } => {
                    self.largest_push = self.largest_push.max(updates.len());
                    self.send(Event::Push {
                        from: i,
                        to: index(&to),
                        kind: Kind::Ping(probe),
                        rows: updates,
                    });
                }
                Effect::IndirectPing { via, target, probe } => {
                    let via = index(&via);
                    self.send(Event::ProbeRequest {
                        requester: i,
                        via,
                        target: index(&target),
                        probe,
                    });
                    // The runtime gives up on the helper at the end of the period.
                    let wait = self.config.period - self.config.probe_timeout;
                    self.at(
                        self.now + wait,
                        Event::IndirectTimeout {
                            requester: i,
                            via,
                            probe,
                        },
                    );
                }
                Effect::Gossip { to, updates } => {
                    self.largest_push = self.largest_push.max(updates.len());
                    self.send(Event::Push {
                        from: i,
                        to: index(&to),
                        kind: Kind::Gossip,
                        rows: updates,
                    });
                }
                Effect::Sync { to, table } => self.send(Event::Push {
                    from: i,
                    to: index(&to),
                    kind: Kind::Sync,
                    rows: table,
                }),
                Effect::Changed(row) => self.log.push((self.now, i, row)),
            }
        }
    }

    fn reschedule(&mut self, i: usize) {
        if self.nodes[i].run != Run::Running {
            return;
        }
        let now = self.now;
        let node = &mut self.nodes[i];
        match node.swim.next_deadline() {
            None => {
                node.tick_at = None;
                node.generation += 1;
            }
            Some(deadline) => {
                let at = deadline.max(now);
                if node.tick_at != Some(at) {
                    node.generation += 1;
                    node.tick_at = Some(at);
                    let generation = node.generation;
                    self.at(
                        at,
                        Event::Tick {
                            node: i,
                            generation,
                        },
                    );
                }
            }
        }
    }

    fn answer_helper(&mut self, via: usize, call: u64, reached: bool) {
        if let Some(c) = self.helper_calls.get_mut(&call)
            && !c.done
        {
            c.done = true;
            let (requester, probe) = (c.requester, c.probe);
            self.send(Event::ProbeAnswer {
                requester,
                via,
                probe,
                answer: reached,
            });
        }
    }

    fn handle(&mut self, event: Event) {
        let owner = event.owner();
        let now = self.now;
        match event {
            Event::Tick { node, generation } => {
                if generation != self.nodes[node].generation {
                    return;
                }
                self.nodes[node].tick_at = None;
                let effects = self.nodes[node].swim.tick(now);
                self.apply(node, effects);
                let next = self.nodes[node].swim.next_deadline();
                assert!(next.is_none_or(|d| d > now), "a tick leaves nothing due");
            }
            Event::Push {
                from,
                to,
                kind,
                rows,
            } => {
                let (reply, effects) = self.nodes[to].swim.on_gossip(&addr(from), rows, now);
                self.apply(to, effects);
                self.send(Event::Reply {
                    from: to,
                    to: from,
                    kind,
                    rows: reply,
                });
            }
            Event::Reply {
                from,
                to,
                kind,
                rows,
            } => {
                let swim = &mut self.nodes[to].swim;
                let effects = match kind {
                    Kind::Ping(probe) => swim.on_reply(probe, &addr(from), rows, now),
                    Kind::Gossip | Kind::Sync => swim.on_gossip_reply(&addr(from), rows, now),
                };
                self.apply(to, effects);
            }
            Event::ProbeRequest {
                requester,
                via,
                target,
                probe,
            } => {
                self.seq += 1;
                let call = self.seq;
                self.helper_calls.insert(
                    call,
                    HelperCall {
                        requester,
                        probe,
                        done: false,
                    },
                );
                self.send(Event::BarePing { via, target, call });
                let timeout = self.config.probe_timeout;
                self.at(now + timeout, Event::HelperTimeout { via, call });
            }
            Event::BarePing { via, call, .. } => self.send(Event::BarePong { via, call }),
            Event::BarePong { via, call } => self.answer_helper(via, call, true),
            Event::HelperTimeout { via, call } => self.answer_helper(via, call, false),
            Event::ProbeAnswer {
                requester,
                via,
                probe,
                answer,
            } => {
                if self.answered.insert((requester, probe, via)) {
                    let effects = self.nodes[requester].swim.on_indirect(
                        probe,
                        &addr(via),
                        Some(answer),
                        now,
                    );
                    self.apply(requester, effects);
                }
            }
            Event::IndirectTimeout {
                requester,
                via,
                probe,
            } => {
                if self.answered.insert((requester, probe, via)) {
                    let effects =
                        self.nodes[requester]
                            .swim
                            .on_indirect(probe, &addr(via), None, now);
                    self.apply(requester, effects);
                }
            }
        }
        self.reschedule(owner);
    }

    /// Handles every event up to `until`, then sets the clock there.
    fn run_until(&mut self, until: Duration) {
        while let Some((&(time, seq), _)) = self.queue.first_key_value() {
            if time > until {
                break;
            }
            let event = self.queue.remove(&(time, seq)).expect("listed");
            self.now = time;
            let owner = event.owner();
            match self.nodes[owner].run {
                Run::Stopped => {}
                Run::Paused => {
                    if !matches!(event, Event::Tick { .. }) {
                        self.nodes[owner].held.push(event);
                    }
                }
                Run::Running => self.handle(event),
            }
        }
        self.now = until;
    }

    /// Runs until `done` holds (checked every 10 ms) or `limit`; the time it
    /// first held.
    fn run_until_true(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        loop {
            if done(self) {
                return Some(self.now);
            }
            if self.now >= limit {
                return None;
            }
            let next = (self.now + ms(10)).min(limit);
            self.run_until(next);
        }
    }

    fn pause(&mut self, i: usize) {
        self.nodes[i].run = Run::Paused;
    }

    /// The process runs again: late timers and held messages first, then a tick.
    fn resume(&mut self, i: usize) {
        self.nodes[i].run = Run::Running;
        self.nodes[i].tick_at = None;
        self.nodes[i].generation += 1;
        for event in std::mem::take(&mut self.nodes[i].held) {
            self.handle(event);
        }
        self.act(i, |swim, now| swim.tick(now));
    }

    fn stop(&mut self, i: usize) {
        self.nodes[i].run = Run::Stopped;
    }

    fn view(&self, observer: usize) -> &Membership {
        self.nodes[observer].swim.membership()
    }

    fn status(&self, observer: usize, member: usize) -> Option<Status> {
        self.view(observer).status(&addr(member))
    }

    /// Indexes of the nodes still running, `except` one.
    fn others(&self, except: usize) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| i != except && self.nodes[i].run == Run::Running)
            .collect()
    }

    /// Every node holds the same table: all `n` members, all alive, and
    /// each confirmed by every other (all serve in every view).
    fn agreed(&self) -> bool {
        let n = self.nodes.len();
        let first = self.view(0).table();
        first.len() == n
            && first.iter().all(|r| r.status == Status::Alive)
            && (1..n).all(|i| self.view(i).table() == first)
            && (0..n).all(|i| self.view(i).alive().count() == n)
    }

    fn agree(&mut self, limit: Duration) -> Duration {
        self.run_until_true(limit, Sim::agreed)
            .unwrap_or_else(|| panic!("no agreement by {limit:?}"))
    }

    /// When each observer first recorded `member` with `status`.
    fn first_seen(&self, member: usize, status: Status) -> BTreeMap<usize, Duration> {
        let mut seen = BTreeMap::new();
        for (time, observer, row) in &self.log {
            if row.addr == addr(member) && row.status == status {
                seen.entry(*observer).or_insert(*time);
            }
        }
        seen
    }

    fn deaths(&self) -> Vec<&Entry> {
        self.log
            .iter()
            .filter(|(_, _, r)| r.status == Status::Dead)
            .collect()
    }
}

// ---- one machine, driven by hand ----

fn machine(peers: usize, failure_timeout: Duration) -> Swim {
    let mut swim = Swim::new(
        addr(0),
        1,
        Config::from_failure_timeout(failure_timeout),
        7,
        Duration::ZERO,
    );
    let rows: Vec<MemberState> = (1..=peers)
        .map(|i| MemberState {
            addr: addr(i),
            incarnation: 1,
            status: Status::Alive,
            weight: 1,
        })
        .collect();
    // Each answered us itself, so each serves at once.
    for row in rows {
        swim.on_gossip_reply(&row.addr.clone(), vec![row], Duration::ZERO);
    }
    swim
}

/// Ticks `swim` at each deadline until `until`, collecting effects.
fn tick_until(swim: &mut Swim, until: Duration) -> Vec<(Duration, Effect)> {
    let mut out = Vec::new();
    while let Some(deadline) = swim.next_deadline() {
        if deadline > until {
            break;
        }
        out.extend(swim.tick(deadline).into_iter().map(|e| (deadline, e)));
    }
    out
}

fn pings(effects: &[(Duration, Effect)]) -> Vec<(Duration, NodeAddr, ProbeId)> {
    effects
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::Ping { to, probe, .. } => Some((*t, to.clone(), *probe)),
            _ => None,
        })
        .collect()
}

#[test]
fn each_member_is_probed_once_per_round() {
    let mut swim = machine(5, secs(2));
    let mut targets = Vec::new();
    let mut now = Duration::ZERO;
    while targets.len() < 15 {
        let deadline = swim.next_deadline().expect("running");
        now = now.max(deadline);
        for effect in swim.tick(now) {
            if let Effect::Ping { to, probe, .. } = effect {
                swim.on_reply(probe, &to, Vec::new(), now + ms(1));
                targets.push(to);
            }
        }
    }
    for round in targets.chunks(5) {
        let distinct: BTreeSet<_> = round.iter().collect();
        assert_eq!(distinct.len(), 5, "round {round:?}");
    }
    assert_eq!(swim.health(), 0);
}

#[test]
fn an_unanswered_probe_asks_helpers_then_suspects_at_the_end_of_the_period() {
    let failure_timeout = secs(2);
    let mut swim = machine(4, failure_timeout);
    let config = swim.config().clone();
    let effects = tick_until(&mut swim, config.period * 2);
    let (sent, target, probe) = pings(&effects)[0].clone();
    let helpers: Vec<_> = effects
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::IndirectPing { via, probe: p, .. } if *p == probe => Some((*t, via.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(helpers.len(), 3);
    assert!(
        helpers
            .iter()
            .all(|(t, _)| *t == sent + config.probe_timeout)
    );
    let suspected: Vec<_> = effects
        .iter()
        .filter(|(_, e)| matches!(e, Effect::Changed(r) if r.addr == target && r.status == Status::Suspect))
        .collect();
    assert_eq!(suspected.len(), 1);
    assert_eq!(suspected[0].0, sent + config.period);
    // The helpers never answered: the fault may be ours.
    assert_eq!(swim.health(), 3);
}

#[test]
fn a_suspect_is_declared_dead_when_its_suspicion_times_out() {
    let mut swim = machine(1, secs(2));
    let config = swim.config().clone();
    let effects = tick_until(&mut swim, secs(2));
    let changes: Vec<_> = effects
        .iter()
        .filter_map(|(t, e)| match e {
            Effect::Changed(r) => Some((*t, r.status)),
            _ => None,
        })
        .collect();
    // Two members cannot gather confirmations: the shortest timeout applies.
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes[0].1, Status::Suspect);
    assert_eq!(
        changes[1],
        (changes[0].0 + config.suspicion_min, Status::Dead)
    );
    // No helper to ask, so the fault may be ours.
    assert!(swim.health() >= 1);
}

#[test]
fn confirmations_shrink_the_suspicion_timeout() {
    let swim = machine(8, secs(2));
    let config = swim.config().clone();
    assert_eq!(swim.suspicion_timeout(1, 9), config.suspicion_max);
    let one = swim.suspicion_timeout(2, 9);
    let two = swim.suspicion_timeout(3, 9);
    assert!(config.suspicion_max > one && one > two && two > config.suspicion_min);
    assert_eq!(swim.suspicion_timeout(4, 9), config.suspicion_min);
    assert_eq!(swim.suspicion_timeout(40, 9), config.suspicion_min);
    // Too few members to confirm: the minimum at once.
    assert_eq!(swim.suspicion_timeout(1, 4), config.suspicion_min);
}

#[test]
fn a_node_that_missed_its_deadline_drops_its_probe_instead_of_accusing() {
    let mut swim = machine(3, secs(2));
    let config = swim.config().clone();
    let effects = tick_until(&mut swim, config.period);
    let (sent, _, _) = pings(&effects)[0].clone();
    // Paused from just after the ping until well past the end of the period.
    let late = sent + config.period * 5;
    let effects = swim.tick(late);
    assert!(
        !effects
            .iter()
            .any(|e| matches!(e, Effect::Changed(r) if r.status != Status::Alive)),
        "{effects:?}"
    );
    assert_eq!(swim.missed_deadlines(), 1);
    assert_eq!(swim.health(), 1);
    // It probes again at once.
    assert!(effects.iter().any(|e| matches!(e, Effect::Ping { .. })));
}

#[test]
fn news_of_our_suspicion_is_refuted_in_the_reply() {
    let mut swim = machine(3, secs(2));
    let accusation = MemberState {
        addr: addr(0),
        incarnation: 1,
        status: Status::Suspect,
        weight: 1,
    };
    let push = vec![swim.membership().state(&addr(2)).unwrap(), accusation];
    let (reply, effects) = swim.on_gossip(&addr(2), push, ms(5));
    let mine = MemberState {
        addr: addr(0),
        incarnation: 2,
        status: Status::Alive,
        weight: 1,
    };
    assert_eq!(reply[0], mine);
    assert_eq!(effects, vec![Effect::Changed(mine)]);
    assert_eq!(swim.health(), 1);
}

#[test]
fn messages_stay_bounded_and_each_change_is_sent_a_limited_number_of_times() {
    let mut swim = machine(40, secs(2));
    let config = swim.config().clone();
    // 41 rows: each change is to be sent 3 · ⌈log2(42)⌉ = 18 times.
    let limit = config.retransmit_mult as usize * 6;
    let mut sent_of_member_7 = 0;
    for round in 0..200 {
        let from = addr(1 + round % 40);
        let push = vec![swim.membership().state(&from).unwrap()];
        let (reply, _) = swim.on_gossip(&from, push, ms(round as u64));
        assert!(reply.len() <= config.max_piggyback + 2, "{}", reply.len());
        sent_of_member_7 += reply.iter().filter(|r| r.addr == addr(7)).count();
    }
    assert_eq!(sent_of_member_7, limit);
    assert!(swim.broadcasts.is_empty());
}

// ---- the simulated cluster ----

/// Detection of a member paused at a random moment after agreement.
struct Detection {
    first_suspect: Duration,
    first_dead: Duration,
    last_dead: Duration,
}

fn detect(n: usize, failure_timeout: Duration, seed: u64) -> Detection {
    let mut sim = Sim::joining(n, failure_timeout, seed, 0.0);
    sim.agree(secs(20));
    // Let the join's broadcasts drain, then pause at an arbitrary moment.
    let settle = sim.now + secs(1) + ms(sim.rng.random_range(0..1000));
    sim.run_until(settle);
    let victim = 1 + sim.rng.random_range(0..n - 1);
    sim.pause(victim);
    let paused = sim.now;
    let others = sim.others(victim);
    let all_dead = |s: &Sim| {
        others
            .iter()
            .all(|&o| s.status(o, victim) == Some(Status::Dead))
    };
    sim.run_until_true(paused + failure_timeout * 2, all_dead)
        .unwrap_or_else(|| panic!("n={n} {failure_timeout:?} seed {seed}: not dead everywhere"));
    let suspects = sim.first_seen(victim, Status::Suspect);
    let deaths = sim.first_seen(victim, Status::Dead);
    // Nobody else died, and the victim was suspected before anyone declared it dead.
    assert!(
        sim.deaths().iter().all(|(_, _, r)| r.addr == addr(victim)),
        "false deaths: {:?}",
        sim.deaths()
    );
    let first_suspect = *suspects.values().min().expect("suspected") - paused;
    let first_dead = *deaths.values().min().expect("dead") - paused;
    assert!(first_suspect < first_dead);
    Detection {
        first_suspect,
        first_dead,
        last_dead: *deaths.values().max().expect("dead") - paused,
    }
}

#[test]
fn sixty_four_members_joining_one_seed_at_once_agree_within_ten_seconds() {
    for failure_timeout in [secs(2), secs(5)] {
        let mut sim = Sim::joining(64, failure_timeout, 64, 0.0);
        let agreed = sim.agree(secs(10));
        println!(
            "64 joined at once, F = {failure_timeout:?}: all agree at {agreed:?} \
             ({} messages, largest ping or gossip {} rows)",
            sim.messages, sim.largest_push
        );
        // Run on: nobody is ever suspected, let alone declared dead.
        sim.run_until(agreed + secs(5));
        let accused: Vec<_> = sim
            .log
            .iter()
            .filter(|(_, _, r)| r.status != Status::Alive)
            .collect();
        assert!(accused.is_empty(), "{accused:?}");
        assert!(sim.agreed());
        assert!(sim.largest_push <= sim.config.max_piggyback + 2);
    }
}

#[test]
fn a_silent_member_is_declared_dead_everywhere_within_the_failure_timeout() {
    for failure_timeout in [secs(2), secs(5)] {
        for n in [5, 24, 64] {
            let d = detect(n, failure_timeout, n as u64);
            println!(
                "n = {n:2}, F = {failure_timeout:?}: suspected after {:?}, \
                 first dead {:?}, dead everywhere {:?}",
                d.first_suspect, d.first_dead, d.last_dead
            );
            assert!(d.last_dead <= failure_timeout, "n = {n}: {:?}", d.last_dead);
        }
    }
}

/// Sweeps seeds to find the worst case (run with `--ignored --nocapture`).
#[test]
#[ignore]
fn detection_times_over_many_seeds() {
    for failure_timeout in [secs(2), secs(5)] {
        for n in [5, 24, 64] {
            let mut last: Vec<Duration> = (100..200)
                .map(|seed| detect(n, failure_timeout, seed).last_dead)
                .collect();
            last.sort();
            println!(
                "n = {n:2}, F = {failure_timeout:?}: dead everywhere, median {:?}, \
                 p90 {:?}, max {:?}",
                last[50], last[90], last[99]
            );
        }
    }
}

#[test]
fn a_paused_member_that_resumes_before_its_suspicion_times_out_stays_alive() {
    let failure_timeout = secs(2);
    let mut sim = Sim::joining(24, failure_timeout, 3, 0.0);
    sim.agree(secs(10));
    sim.run_until(sim.now + secs(1));
    let victim = 11;
    let before = sim.view(0).state(&addr(victim)).unwrap().incarnation;
    sim.pause(victim);
    let others = sim.others(victim);
    let suspected = sim
        .run_until_true(sim.now + failure_timeout, |s| {
            others
                .iter()
                .any(|&o| s.status(o, victim) == Some(Status::Suspect))
        })
        .expect("suspected");
    sim.run_until(suspected + sim.config.period);
    sim.resume(victim);
    sim.run_until(sim.now + failure_timeout * 2);
    assert!(sim.deaths().is_empty(), "{:?}", sim.deaths());
    for o in others {
        let row = sim.view(o).state(&addr(victim)).unwrap();
        assert_eq!(row.status, Status::Alive);
        assert!(row.incarnation > before, "the victim refuted");
    }
    assert!(sim.agreed());
}

#[test]
fn a_member_declared_dead_comes_back_when_it_resumes() {
    let failure_timeout = secs(2);
    let mut sim = Sim::joining(24, failure_timeout, 8, 0.0);
    sim.agree(secs(10));
    let victim = 17;
    let before = sim.view(0).state(&addr(victim)).unwrap().incarnation;
    sim.pause(victim);
    let others = sim.others(victim);
    sim.run_until_true(sim.now + failure_timeout, |s| {
        others
            .iter()
            .all(|&o| s.status(o, victim) == Some(Status::Dead))
    })
    .expect("dead everywhere");
    sim.run_until(sim.now + secs(3));
    sim.resume(victim);
    let resumed = sim.now;
    let back = sim
        .run_until_true(resumed + failure_timeout, Sim::agreed)
        .expect("back everywhere");
    println!(
        "24 members: a resumed dead member is back everywhere after {:?}",
        back - resumed
    );
    assert!(sim.view(0).state(&addr(victim)).unwrap().incarnation > before);
    assert!(sim.nodes[victim].swim.missed_deadlines() >= 1);
}

#[test]
fn one_percent_message_loss_causes_no_false_death_at_sixty_four() {
    let mut sim = Sim::joining(64, secs(2), 1, 0.01);
    let agreed = sim.agree(secs(15));
    sim.run_until(agreed + secs(20));
    println!(
        "64 at 1% loss: agree at {agreed:?}; {} of {} messages lost, {} suspicion events, no death",
        sim.dropped,
        sim.messages,
        sim.log
            .iter()
            .filter(|(_, _, r)| r.status == Status::Suspect)
            .count()
    );
    assert!(sim.dropped > 0);
    assert!(sim.deaths().is_empty(), "{:?}", sim.deaths());
    assert!(sim.agreed());
}

#[test]
fn a_leaving_member_is_seen_leaving_everywhere_then_left() {
    let mut sim = Sim::joining(24, secs(2), 5, 0.0);
    sim.agree(secs(10));
    let leaver = 9;
    let others = sim.others(leaver);
    sim.act(leaver, |swim, now| swim.start_leaving(now));
    let started = sim.now;
    let everywhere = |status: Status| {
        let others = others.clone();
        move |s: &Sim| others.iter().all(|&o| s.status(o, leaver) == Some(status))
    };
    let leaving = sim
        .run_until_true(started + secs(2), everywhere(Status::Leaving))
        .expect("seen leaving everywhere");
    for &o in &others {
        assert!(!sim.view(o).alive().any(|a| *a == addr(leaver)));
        assert!(sim.view(o).up_peers().contains(&addr(leaver)));
    }
    // Handing keys over takes a while; it is probed meanwhile and answers.
    sim.run_until(leaving + secs(3));
    sim.act(leaver, |swim, now| swim.leave(now));
    let farewell = sim.now;
    sim.run_until_true(farewell + secs(2), |s| {
        s.nodes[leaver].swim.next_deadline().is_none()
    })
    .expect("done saying goodbye");
    sim.stop(leaver);
    let left = sim
        .run_until_true(farewell + secs(2), everywhere(Status::Left))
        .expect("seen left everywhere");
    println!(
        "24 members: leaving seen everywhere after {:?}, left after {:?}",
        leaving - started,
        left - farewell
    );
    sim.run_until(sim.now + secs(4));
    assert!(sim.deaths().is_empty(), "{:?}", sim.deaths());
    assert!(
        others
            .iter()
            .all(|&o| sim.status(o, leaver) == Some(Status::Left))
    );
}

/// A small eventful history: joins over a lossy network, a pause and resume,
/// a departure.
fn history(seed: u64) -> (Vec<Entry>, u64, u64) {
    let mut sim = Sim::joining(8, secs(2), seed, 0.05);
    sim.run_until(secs(2));
    sim.pause(3);
    sim.run_until(secs(3));
    sim.resume(3);
    sim.run_until(secs(4));
    sim.act(5, |swim, now| swim.start_leaving(now));
    sim.run_until(secs(5));
    sim.act(5, |swim, now| swim.leave(now));
    sim.run_until(secs(8));
    (sim.log, sim.messages, sim.dropped)
}

#[test]
fn the_same_seed_replays_the_same_history() {
    let mut distinct = BTreeSet::new();
    for seed in 0..20 {
        let first = history(seed);
        let second = history(seed);
        assert_eq!(first, second, "seed {seed}");
        assert!(!first.0.is_empty());
        distinct.insert(format!("{:?}", first.0));
    }
    assert!(distinct.len() > 1, "seeds change the history");
}

/// How suspicion and refutation hold up under heavy loss (run with
/// `--ignored --nocapture`).
#[test]
#[ignore]
fn false_deaths_under_heavy_loss() {
    for loss in [0.02, 0.05, 0.10] {
        for seed in 0..3 {
            let mut sim = Sim::joining(64, secs(2), seed, loss);
            sim.run_until(secs(30));
            let suspicions = sim
                .log
                .iter()
                .filter(|(_, _, r)| r.status == Status::Suspect)
                .count();
            let dead: BTreeSet<_> = sim
                .deaths()
                .iter()
                .map(|(_, _, r)| r.addr.clone())
                .collect();
            println!(
                "64 at {loss}: seed {seed}: {suspicions} suspicions, {} members falsely dead",
                dead.len()
            );
        }
    }
}

// ---- hostile news ----

#[test]
fn a_gossiped_member_serves_only_once_it_answered_a_call_of_ours() {
    let mut swim = machine(2, secs(2));
    let newcomer = MemberState {
        addr: addr(9),
        incarnation: 1,
        status: Status::Alive,
        weight: 1,
    };
    // Member 1 tells us about 9: we push to 9 at once, but 9 does not serve.
    let mine = swim.membership().state(&addr(1)).unwrap();
    let (_, effects) = swim.on_gossip(&addr(1), vec![mine, newcomer.clone()], ms(1));
    assert!(
        effects
            .iter()
            .any(|e| matches!(e, Effect::Gossip { to, .. } if *to == addr(9)))
    );
    assert!(!swim.membership().alive().any(|a| *a == addr(9)));
    // A push that names 9 as its sender proves nothing (anyone can write it).
    swim.on_gossip(&addr(9), vec![newcomer.clone()], ms(2));
    assert!(!swim.membership().alive().any(|a| *a == addr(9)));
    // Nor does a reply from 9's address in which someone else speaks first.
    let other = swim.membership().state(&addr(2)).unwrap();
    swim.on_gossip_reply(&addr(9), vec![other, newcomer.clone()], ms(3));
    assert!(!swim.membership().alive().any(|a| *a == addr(9)));
    // 9 answered our call with its own row: it serves, and the ring is rebuilt.
    let effects = swim.on_gossip_reply(&addr(9), vec![newcomer.clone()], ms(4));
    assert!(effects.contains(&Effect::Changed(newcomer)));
    assert!(swim.membership().alive().any(|a| *a == addr(9)));
}

#[test]
fn a_message_naming_a_thousand_fake_members_costs_a_bounded_number_of_calls() {
    let mut swim = machine(3, secs(2));
    let fakes: Vec<MemberState> = (100..1100)
        .map(|i| MemberState {
            addr: addr(i),
            incarnation: 1,
            status: Status::Alive,
            weight: 1,
        })
        .collect();
    let (_, effects) = swim.on_gossip(&addr(100), fakes, ms(1));
    let calls = |effects: &[Effect]| {
        effects
            .iter()
            .filter(|e| !matches!(e, Effect::Changed(_)))
            .count()
    };
    assert_eq!(calls(&effects), swim.config().confirm_burst);
    // The next interval's allowance, no more.
    let interval = swim.config().gossip_interval;
    let later = tick_until(&mut swim, interval + ms(1));
    let later: Vec<Effect> = later.into_iter().map(|(_, e)| e).collect();
    let confirms = later
        .iter()
        .filter(|e| matches!(e, Effect::Gossip { to, .. } if index(to) >= 100))
        .count();
    assert!(confirms <= swim.config().confirm_burst, "{confirms}");
    // None of them serves, none counts toward quorums.
    assert_eq!(swim.membership().alive().count(), 4);
    assert_eq!(swim.membership().known(), 4);
}

#[test]
fn gossiped_members_that_never_answer_never_serve_and_are_declared_dead() {
    let failure_timeout = secs(2);
    // Nodes 0-4 form the ring; 5-7 are ports that accept and never answer.
    let mut sim = Sim::new(8, failure_timeout, 11, 0.0);
    for fake in 5..8 {
        sim.stop(fake);
    }
    for i in 1..5 {
        sim.act(i, |swim, now| swim.join(&[addr(0)], now));
    }
    let real = 0..5;
    sim.run_until_true(secs(5), |s| {
        real.clone().all(|i| s.view(i).alive().count() == 5)
    })
    .expect("the ring forms");
    let fakes: Vec<MemberState> = (5..8)
        .map(|i| MemberState {
            addr: addr(i),
            incarnation: 5_000,
            status: Status::Alive,
            weight: 1,
        })
        .collect();
    sim.act(0, |swim, now| swim.on_gossip(&addr(5), fakes, now).1);
    let serves = |s: &Sim| {
        real.clone()
            .any(|i| s.view(i).alive().any(|a| index(a) >= 5) || s.view(i).known() != 5)
    };
    let limit = sim.now + failure_timeout * 2;
    assert_eq!(sim.run_until_true(limit, serves), None, "a fake served");
    for i in real.clone() {
        for fake in 5..8 {
            assert_eq!(sim.status(i, fake), Some(Status::Dead), "{i} on {fake}");
        }
        assert_eq!(sim.view(i).alive().count(), 5);
    }
}

#[test]
fn a_death_forged_at_i64_max_is_refused_and_one_at_the_horizon_is_refuted() {
    let failure_timeout = secs(2);
    let mut sim = Sim::joining(5, failure_timeout, 5, 0.0);
    sim.agree(secs(10));
    let victim = 2;
    let forged = |incarnation| MemberState {
        addr: addr(victim),
        incarnation,
        status: Status::Dead,
        weight: 1,
    };
    // i64::MAX: refused outright; nothing changes anywhere.
    sim.act(0, |swim, now| {
        swim.on_gossip(&addr(1), vec![forged(i64::MAX)], now).1
    });
    assert_eq!(sim.status(0, victim), Some(Status::Alive));
    sim.run_until(sim.now + secs(1));
    assert!(sim.agreed());
    // The highest incarnation node 0 takes: it drops the victim, the news
    // spreads, and the victim refutes one higher and comes back everywhere.
    let ceiling = sim.view(0).ceiling();
    sim.act(0, |swim, now| {
        swim.on_gossip(&addr(1), vec![forged(ceiling)], now).1
    });
    assert_eq!(sim.status(0, victim), Some(Status::Dead));
    let back = sim
        .run_until_true(sim.now + failure_timeout, Sim::agreed)
        .expect("the victim is back everywhere");
    let row = sim.view(0).state(&addr(victim)).unwrap();
    assert_eq!(row.incarnation, ceiling + 1);
    assert!(row.incarnation < i64::MAX);
    println!("a death forged at the horizon was refuted everywhere by {back:?}");
}
