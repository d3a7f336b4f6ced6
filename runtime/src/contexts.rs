//! The per-context state of an endpoint, indexed by context id, with the
//! bound that keeps a peer's frame from growing it without limit.
//!
//! Context ids are small, dense numbers agreed by the members of each new
//! communicator (above every id any member has used), so the table is a
//! vector indexed by id: one load on the path of every message. A frame may
//! name a context this rank has not opened yet (a peer finished creating the
//! communicator first); the table makes it on arrival. That is where a hostile
//! or corrupt frame could ask for an entry at id 4 billion, so a frame's
//! context is admitted only when it is open already, lies within
//! [`WINDOW`] ids of the next id this rank would use (kept in the vector), or
//! is one of at most [`MAX_FAR`] contexts further ahead (kept aside until
//! this rank opens them: a peer that created many communicators in a subgroup
//! may legitimately be far ahead).

use crate::types::ContextId;

/// Context ids ahead of this rank's next one that a frame may open in place.
pub(crate) const WINDOW: u32 = 1024;

/// Contexts beyond the window that frames may open before this rank does.
pub(crate) const MAX_FAR: usize = 64;

/// Per-context state `T`, by context id.
#[derive(Debug)]
pub(crate) struct Contexts<T> {
    dense: Vec<Option<T>>,
    far: Vec<(u32, T)>,
}

impl<T> Default for Contexts<T> {
    fn default() -> Self {
        Contexts { dense: Vec::new(), far: Vec::new() }
    }
}

impl<T: Default> Contexts<T> {
    /// The state of a context this rank uses, made on first use. Ids given
    /// here come from this rank's own communicators, never from a frame.
    #[inline]
    pub fn local(&mut self, ctx: ContextId) -> &mut T {
        let i = ctx.0 as usize;
        if !matches!(self.dense.get(i), Some(Some(_))) {
            self.make_dense(i);
        }
        match &mut self.dense[i] {
            Some(c) => c,
            None => unreachable!("made above"),
        }
    }

    /// The state of the context a peer's frame names, when it may be
    /// admitted (see the module documentation); why not otherwise.
    #[inline]
    pub fn admit(&mut self, ctx: ContextId, next: u32) -> Result<&mut T, String> {
        let i = ctx.0 as usize;
        if matches!(self.dense.get(i), Some(Some(_))) || ctx.0 < next.saturating_add(WINDOW) {
            return Ok(self.local(ctx));
        }
        self.admit_far(ctx)
    }

    #[cold]
    fn admit_far(&mut self, ctx: ContextId) -> Result<&mut T, String> {
        let at = match self.far.iter().position(|(id, _)| *id == ctx.0) {
            Some(at) => at,
            None if self.far.len() < MAX_FAR => {
                self.far.push((ctx.0, T::default()));
                self.far.len() - 1
            }
            None => {
                return Err(format!(
                "context {} is far beyond this rank's, with {MAX_FAR} such contexts open already",
                ctx.0
            ))
            }
        };
        Ok(&mut self.far[at].1)
    }

    #[cold]
    #[inline(never)]
    fn make_dense(&mut self, i: usize) {
        if i >= self.dense.len() {
            self.dense.resize_with(i + 1, || None);
        }
        let early = self.far.iter().position(|(id, _)| *id as usize == i);
        let state = early.map(|at| self.far.swap_remove(at).1).unwrap_or_default();
        self.dense[i].get_or_insert(state);
    }
}

impl<T> Contexts<T> {
    /// The state of an open context, if any.
    #[inline]
    pub fn get(&self, ctx: ContextId) -> Option<&T> {
        match self.dense.get(ctx.0 as usize) {
            Some(Some(c)) => Some(c),
            _ => self.far.iter().find(|(id, _)| *id == ctx.0).map(|(_, c)| c),
        }
    }

    /// Forgets a context (its communicator is gone on this rank).
    pub fn remove(&mut self, ctx: ContextId) -> Option<T> {
        if let Some(slot) = self.dense.get_mut(ctx.0 as usize) {
            if let Some(c) = slot.take() {
                return Some(c);
            }
        }
        let at = self.far.iter().position(|(id, _)| *id == ctx.0)?;
        Some(self.far.swap_remove(at).1)
    }

    /// Every context with state, and its id.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (ContextId, &mut T)> {
        let dense = self
            .dense
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| c.as_mut().map(|c| (ContextId(i as u32), c)));
        dense.chain(self.far.iter_mut().map(|(id, c)| (ContextId(*id), c)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_open_near_contexts_in_place_and_a_bounded_number_far_ahead() {
        const FAR: u32 = 4 + WINDOW + 1000;
        let mut table: Contexts<u32> = Contexts::default();
        *table.local(ContextId(2)) = 7;
        // Open, or within the window: admitted in place.
        assert_eq!(*table.admit(ContextId(2), 4).unwrap(), 7);
        *table.admit(ContextId(4 + WINDOW - 1), 4).unwrap() = 9;
        assert_eq!(table.dense.len(), (4 + WINDOW) as usize);
        // Far ahead: kept aside, a bounded number of them.
        for k in 0..MAX_FAR as u32 {
            *table.admit(ContextId(FAR + k), 4).unwrap() = k;
        }
        let err = table.admit(ContextId(u32::MAX), 4).unwrap_err();
        assert!(err.contains("far beyond"), "{err}");
        assert_eq!(table.dense.len(), (4 + WINDOW) as usize, "a far frame grew the table");
        // A far context met again is the same one; opened locally, it moves
        // into the table with what arrived for it.
        assert_eq!(*table.admit(ContextId(FAR + 3), 4).unwrap(), 3);
        assert_eq!(*table.local(ContextId(FAR + 3)), 3);
        assert_eq!(table.far.len(), MAX_FAR - 1);
        assert_eq!(table.dense.len(), (FAR + 4) as usize);
        assert_eq!(table.get(ContextId(FAR + 3)), Some(&3));
        assert_eq!(table.get(ContextId(FAR + 5)), Some(&5));
        assert_eq!(table.iter_mut().count(), 2 + MAX_FAR);
    }
}
