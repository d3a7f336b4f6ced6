//! A target's lock: shared by any number of origins or held by one alone,
//! granted in the order asked, so that no origin waits forever behind a
//! stream of others.

use std::collections::VecDeque;

use super::wire::LockKind;

#[derive(Debug)]
pub(crate) struct Locks {
    /// What each origin holds.
    held: Vec<Option<LockKind>>,
    /// Origins waiting, first asked first.
    queue: VecDeque<(usize, LockKind)>,
}

impl Locks {
    pub(crate) fn new(origins: usize) -> Locks {
        Locks { held: vec![None; origins], queue: VecDeque::new() }
    }

    fn grantable(&self, kind: LockKind) -> bool {
        let mut holders = self.held.iter().flatten();
        match kind {
            LockKind::Exclusive => holders.next().is_none(),
            LockKind::Shared => holders.all(|k| *k == LockKind::Shared),
        }
    }

    /// `origin` asks for the lock: whether it holds it now (else it waits
    /// in line). `Err` if it holds or awaits it already.
    pub(crate) fn acquire(&mut self, origin: usize, kind: LockKind) -> Result<bool, String> {
        let busy = self.held.get(origin).ok_or("no such origin")?.is_some()
            || self.queue.iter().any(|(o, _)| *o == origin);
        if busy {
            return Err(format!("rank {origin} asked for a lock it holds already"));
        }
        if self.queue.is_empty() && self.grantable(kind) {
            self.held[origin] = Some(kind);
            return Ok(true);
        }
        self.queue.push_back((origin, kind));
        Ok(false)
    }

    /// Whether `origin` holds the lock.
    pub(crate) fn holds(&self, origin: usize) -> bool {
        self.held.get(origin).is_some_and(Option::is_some)
    }

    /// `origin` gives its lock back; the origins that hold it now, in the
    /// order they asked. `Err` if it held none.
    pub(crate) fn release(&mut self, origin: usize) -> Result<Vec<usize>, String> {
        let slot = self.held.get_mut(origin).ok_or("no such origin")?;
        if slot.take().is_none() {
            return Err(format!("rank {origin} gave back a lock it did not hold"));
        }
        Ok(self.grant())
    }

    /// `origin` is gone: it holds nothing and waits for nothing. The
    /// origins that hold the lock now.
    pub(crate) fn forget(&mut self, origin: usize) -> Result<Vec<usize>, String> {
        *self.held.get_mut(origin).ok_or("no such origin")? = None;
        self.queue.retain(|(o, _)| *o != origin);
        Ok(self.grant())
    }

    /// Empties the queue: the origins that were waiting, to be told that
    /// the window failed instead of being granted the lock.
    pub(crate) fn refuse_waiting(&mut self) -> Vec<usize> {
        self.queue.drain(..).map(|(origin, _)| origin).collect()
    }

    /// Grants the lock to the origins at the front of the queue while it
    /// can; those it granted.
    fn grant(&mut self) -> Vec<usize> {
        let mut granted = Vec::new();
        while let Some(&(next, kind)) = self.queue.front() {
            if !self.grantable(kind) {
                break;
            }
            self.queue.pop_front();
            self.held[next] = Some(kind);
            granted.push(next);
        }
        granted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LockKind::*;

    #[test]
    fn shared_holders_share_an_exclusive_one_waits_and_order_is_kept() {
        let mut l = Locks::new(4);
        assert_eq!(l.acquire(0, Shared), Ok(true));
        assert_eq!(l.acquire(1, Shared), Ok(true));
        assert_eq!(l.acquire(2, Exclusive), Ok(false));
        // A shared request behind a waiting exclusive one waits too.
        assert_eq!(l.acquire(3, Shared), Ok(false));
        assert!(l.acquire(3, Shared).is_err());
        assert_eq!(l.release(0), Ok(vec![]));
        assert_eq!(l.release(1), Ok(vec![2]));
        assert_eq!(l.release(2), Ok(vec![3]));
        assert!(l.release(2).is_err());
        assert!(l.release(9).is_err());
        assert_eq!(l.acquire(0, Shared), Ok(true));
        assert_eq!(l.acquire(1, Exclusive), Ok(false));
        assert_eq!(l.release(3), Ok(vec![]));
        assert_eq!(l.release(0), Ok(vec![1]));
        // A lost origin's lock and place in line go to the next.
        assert_eq!(l.acquire(2, Shared), Ok(false));
        assert_eq!(l.acquire(3, Exclusive), Ok(false));
        assert_eq!(l.forget(2), Ok(vec![]));
        assert_eq!(l.forget(1), Ok(vec![3]));
        assert_eq!(l.acquire(0, Shared), Ok(false));
        assert_eq!(l.refuse_waiting(), vec![0]);
        assert_eq!(l.release(3), Ok(vec![]));
    }
}
