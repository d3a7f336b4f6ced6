//! Supervision, as a pure function from events to actions: what the
//! launcher does when ranks end, a rank aborts, a node is lost, time passes
//! or the user interrupts. The loop in `run` feeds it and carries out what
//! it says; the tests here feed it directly.

use std::ops::Range;
use std::time::{Duration, Instant};

/// How a rank ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It exited with this code.
    Code(i32),
    /// A signal killed it.
    Signal(i32),
}

impl Outcome {
    /// From an exit code as node launchers report it (128 + signal when
    /// killed).
    pub fn from_reported(code: i32) -> Outcome {
        if code > 128 && code < 128 + 65 {
            Outcome::Signal(code - 128)
        } else {
            Outcome::Code(code)
        }
    }

    /// The launcher's exit code for it.
    pub fn code(self) -> i32 {
        match self {
            Outcome::Code(c) => c,
            Outcome::Signal(s) => 128 + s,
        }
    }

    fn failed(self) -> bool {
        self != Outcome::Code(0)
    }
}

/// One rank's end.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ended {
    /// The rank.
    pub rank: usize,
    /// Its process id, when it ran here.
    pub pid: Option<u32>,
    /// Where it ran, when not here.
    pub node: Option<usize>,
    /// How it ended.
    pub outcome: Outcome,
}

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// Ranks seen ended in one sweep.
    Ended(Vec<Ended>),
    /// A rank asked to end the job.
    Abort {
        /// The rank.
        rank: usize,
        /// The exit code it asked for.
        code: i32,
        /// Why.
        message: String,
    },
    /// The launcher of another node is gone: a failure if some of its
    /// ranks had not ended.
    NodeLost {
        /// The node.
        node: usize,
        /// Its ranks.
        ranks: Range<usize>,
        /// Why.
        why: String,
    },
    /// SIGINT, SIGTERM or SIGHUP reached the launcher.
    Interrupted,
    /// Time passed.
    Tick,
}

/// What the launcher must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Print `hpcomm run: MESSAGE` on stderr.
    Say(String),
    /// End every rank still running (SIGTERM, then SIGKILL).
    EndAll,
    /// Exit with this code: the job is over.
    Finish(i32),
}

/// The supervision of a job's ranks.
#[derive(Debug)]
pub struct Supervisor {
    /// The first rank supervised; `running[i]` is rank `first + i`.
    first: usize,
    running: Vec<bool>,
    grace: Duration,
    deadline: Option<(Instant, Duration)>,
    /// The first failure: the job's exit code, and the others' grace.
    cause: Option<(i32, Instant)>,
    done: bool,
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => "signal",
    }
}

/// `rank R (pid P) exited with code C` and its kin.
pub fn describe(e: &Ended) -> String {
    let whose = match (e.pid, e.node) {
        (Some(pid), _) => format!("rank {} (pid {pid})", e.rank),
        (None, Some(node)) => format!("rank {} (on node {node})", e.rank),
        (None, None) => format!("rank {}", e.rank),
    };
    match e.outcome {
        Outcome::Code(c) => format!("{whose} exited with code {c}"),
        Outcome::Signal(s) => format!("{whose} killed by signal {s} ({})", signal_name(s)),
    }
}

impl Supervisor {
    /// Supervises `ranks` from `now`: once one fails, the others have
    /// `grace` to end by themselves; the whole job has `timeout`, if set.
    pub fn new(
        ranks: Range<usize>,
        grace: Duration,
        timeout: Option<Duration>,
        now: Instant,
    ) -> Supervisor {
        Supervisor {
            first: ranks.start,
            running: vec![true; ranks.len()],
            grace,
            deadline: timeout.map(|t| (now + t, t)),
            cause: None,
            done: ranks.is_empty(),
        }
    }

    /// Ranks still running.
    pub fn running(&self) -> usize {
        self.running.iter().filter(|&&r| r).count()
    }

    /// Whether rank `rank` still runs.
    pub fn is_running(&self, rank: usize) -> bool {
        rank.checked_sub(self.first).and_then(|i| self.running.get(i)).copied().unwrap_or(false)
    }

    fn fail(&mut self, message: String, code: i32, now: Instant, actions: &mut Vec<Action>) {
        if self.cause.is_some() {
            return;
        }
        let running = self.running();
        actions.push(Action::Say(if running > 0 {
            format!(
                "{message}; ending the job ({running} ranks left, {} s to end)",
                self.grace.as_secs_f64()
            )
        } else {
            format!("{message}; ending the job")
        }));
        self.cause = Some((code, now + self.grace));
    }

    fn finish(&mut self, code: i32, end: bool, actions: &mut Vec<Action>) {
        if end {
            actions.push(Action::EndAll);
        }
        actions.push(Action::Finish(code));
        self.done = true;
    }

    /// What to do about `event` at `now`.
    pub fn on(&mut self, event: Event, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if self.done {
            return actions;
        }
        match event {
            Event::Ended(ended) => {
                // Of the failures seen in one sweep, a rank killed by a
                // signal is the cause; ranks that exited with an error then
                // were mostly reporting its loss.
                let mut worst: Option<&Ended> = None;
                for e in &ended {
                    if !self.is_running(e.rank) {
                        // Ended before, or not one of ours: a node launcher
                        // cannot end a rank twice or end another's.
                        continue;
                    }
                    self.running[e.rank - self.first] = false;
                    let signalled = matches!(e.outcome, Outcome::Signal(_));
                    let better = match worst {
                        None => true,
                        Some(w) => signalled && !matches!(w.outcome, Outcome::Signal(_)),
                    };
                    if e.outcome.failed() && better {
                        worst = Some(e);
                    }
                }
                if let Some(w) = worst {
                    self.fail(describe(w), w.outcome.code(), now, &mut actions);
                }
            }
            Event::Abort { rank, code, message } => {
                let code = if code == 0 { 1 } else { code };
                self.fail(
                    format!("rank {rank} aborted the job: {message}"),
                    code,
                    now,
                    &mut actions,
                );
                // An abort ends the others at once.
                self.cause = self.cause.map(|(c, _)| (c, now));
            }
            Event::NodeLost { node, ranks, why } => {
                // Its ranks stay counted as running: nobody will report
                // them, so the job ends when the others' grace is over.
                if ranks.clone().any(|r| self.is_running(r)) {
                    self.fail(format!("node {node} is lost ({why})"), 1, now, &mut actions);
                }
            }
            Event::Interrupted => {
                actions.push(Action::Say("interrupted; ending the job".into()));
                self.finish(130, true, &mut actions);
                return actions;
            }
            Event::Tick => {}
        }
        if self.running() == 0 {
            let code = self.cause.map_or(0, |(code, _)| code);
            self.finish(code, false, &mut actions);
        } else if let Some((code, until)) = self.cause {
            if now >= until {
                self.finish(code, true, &mut actions);
            }
        } else if let Some((at, limit)) = self.deadline {
            if now >= at {
                actions.push(Action::Say(format!(
                    "the job did not finish within {} s (--timeout); ending its {} ranks",
                    limit.as_secs_f64(),
                    self.running()
                )));
                self.finish(124, true, &mut actions);
            }
        }
        actions
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ended(rank: usize, outcome: Outcome) -> Ended {
        Ended { rank, pid: Some(100 + rank as u32), node: None, outcome }
    }

    fn says(actions: &[Action]) -> String {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Say(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_clean_job_finishes_with_zero_when_its_last_rank_ends() {
        let t = Instant::now();
        let mut s = Supervisor::new(0..2, Duration::from_secs(2), None, t);
        assert_eq!(s.on(Event::Ended(vec![ended(0, Outcome::Code(0))]), t), vec![]);
        assert_eq!(s.on(Event::Tick, t), vec![]);
        assert_eq!(
            s.on(Event::Ended(vec![ended(1, Outcome::Code(0))]), t),
            vec![Action::Finish(0)]
        );
        assert_eq!(s.on(Event::Tick, t), vec![], "nothing after the end");
    }

    #[test]
    fn the_first_failure_decides_and_the_others_get_their_grace() {
        let t = Instant::now();
        let grace = Duration::from_secs(2);
        let mut s = Supervisor::new(0..3, grace, None, t);
        let a = s.on(Event::Ended(vec![ended(1, Outcome::Code(3))]), t);
        assert!(
            says(&a).contains("rank 1 (pid 101) exited with code 3; ending the job (2 ranks left")
        );
        assert!(!a.contains(&Action::EndAll));
        // A later failure is not the cause.
        let a = s.on(Event::Ended(vec![ended(2, Outcome::Signal(9))]), t + grace / 2);
        assert_eq!(a, vec![]);
        let a = s.on(Event::Tick, t + grace);
        assert_eq!(a, vec![Action::EndAll, Action::Finish(3)]);
    }

    #[test]
    fn of_one_sweep_a_signalled_rank_is_the_cause() {
        let t = Instant::now();
        let mut s = Supervisor::new(0..3, Duration::ZERO, None, t);
        let a = s.on(
            Event::Ended(vec![
                ended(0, Outcome::Code(1)),
                ended(2, Outcome::Signal(9)),
                ended(1, Outcome::Code(1)),
            ]),
            t,
        );
        assert!(says(&a).contains("rank 2 (pid 102) killed by signal 9 (SIGKILL); ending the job"));
        assert_eq!(a.last(), Some(&Action::Finish(137)));
    }

    #[test]
    fn timeouts_interrupts_aborts_and_lost_nodes_end_the_job() {
        let t = Instant::now();
        let mut s = Supervisor::new(0..2, Duration::from_secs(2), Some(Duration::from_secs(1)), t);
        assert_eq!(s.on(Event::Tick, t), vec![]);
        let a = s.on(Event::Tick, t + Duration::from_secs(1));
        assert!(says(&a).contains("did not finish within 1 s"));
        assert_eq!(a[1..], [Action::EndAll, Action::Finish(124)]);

        let mut s = Supervisor::new(0..2, Duration::from_secs(2), None, t);
        assert_eq!(s.on(Event::Interrupted, t)[1..], [Action::EndAll, Action::Finish(130)]);

        let mut s = Supervisor::new(0..2, Duration::from_secs(2), None, t);
        let a = s.on(Event::Abort { rank: 1, code: 7, message: "bad input".into() }, t);
        assert!(says(&a).contains("rank 1 aborted the job: bad input"));
        assert_eq!(a[1..], [Action::EndAll, Action::Finish(7)]);

        // Node 1 holds ranks 2 and 3; losing it after they ended is no
        // failure, losing it before is.
        let mut s = Supervisor::new(0..4, Duration::from_secs(2), None, t);
        let gone = Event::NodeLost { node: 1, ranks: 2..4, why: "connection closed".into() };
        let a = s.on(gone.clone(), t);
        assert!(says(&a).contains("node 1 is lost (connection closed); ending the job (4 ranks"));
        assert_eq!(
            s.on(Event::Tick, t + Duration::from_secs(2)),
            vec![Action::EndAll, Action::Finish(1)]
        );
        let mut s = Supervisor::new(0..4, Duration::from_secs(2), None, t);
        let remote = |rank| Ended { rank, pid: None, node: Some(1), outcome: Outcome::Code(0) };
        assert_eq!(s.on(Event::Ended(vec![remote(2), remote(3)]), t), vec![]);
        assert_eq!(s.on(gone, t), vec![]);
        // A rank reported twice, or outside the job, changes nothing.
        assert_eq!(s.on(Event::Ended(vec![remote(2), remote(9)]), t), vec![]);
        assert_eq!(s.running(), 2);
        assert!(s.is_running(0) && !s.is_running(2) && !s.is_running(9));
    }

    #[test]
    fn reported_codes_of_remote_ranks() {
        assert_eq!(Outcome::from_reported(137), Outcome::Signal(9));
        assert_eq!(Outcome::from_reported(3), Outcome::Code(3));
        assert_eq!(Outcome::Signal(9).code(), 137);
        let e = Ended { rank: 5, pid: None, node: Some(2), outcome: Outcome::Code(1) };
        assert_eq!(describe(&e), "rank 5 (on node 2) exited with code 1");
    }
}
