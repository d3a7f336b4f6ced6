//! Matched probes (`MPI_Mprobe`, `MPI_Improbe`, `MPI_Mrecv`,
//! `MPI_Imrecv`) and receives into a new vector.
//!
//! A [`probe`](Communicator::probe) followed by a receive is a race as soon
//! as two parts of a program receive on one communicator (a library and its
//! caller, say): the other part's receive may take the probed message in
//! between, and the receive that follows gets another message or waits for
//! ever. A matched probe takes the message out of every receive's reach at
//! once and hands back a [`Message`] that only its own receive can take.
//!
//! [`Communicator::recv_vec`] — the receive of a message whose length the
//! receiver does not know — is built on it: probe, allocate exactly the
//! message's length, receive.
//!
//! A `Message` dropped without being received puts its message back where
//! it was, ahead of the later ones from its source (or to a receive posted
//! meanwhile that accepts it), so nothing in flight is lost.
//!
//! ```
//! hpcomm_runtime::threads(2, |comm| {
//!     if comm.rank() == 0 {
//!         comm.send(&[1.5f64, 2.5, 3.5], 1, 9).unwrap();
//!     } else {
//!         let (values, status) = comm.recv_vec::<f64>(0, 9).unwrap();
//!         assert_eq!(values, [1.5, 2.5, 3.5]);
//!         assert_eq!(status.count, 3);
//!     }
//! })
//! .unwrap();
//! ```

use bytemuck::Pod;

use crate::comm::{as_bytes_mut, Communicator};
use crate::engine::Matched;
use crate::error::{Error, Result};
use crate::matching::Envelope;
use crate::request::{Request, Scope};
use crate::types::{Rank, Status, Tag};

/// A message taken by a matched probe (`MPI_Message`): no receive but its
/// own ([`Message::recv`], [`Message::recv_vec`], [`Scope::imrecv`]) can
/// take it. Dropping it unreceived puts the message back.
#[derive(Debug)]
#[must_use = "a matched message is received through its handle (dropping it puts the message back)"]
pub struct Message<'c> {
    comm: &'c Communicator,
    /// `None` for a probe of the null process (`MPI_MESSAGE_NO_PROC`), and
    /// once received.
    matched: Option<Matched>,
}

fn status_of(env: Envelope) -> Status {
    Status { source: Rank(env.src as i32), tag: Tag(env.tag), count: env.len }
}

impl Communicator {
    /// Waits for a message that `src` and `tag` accept and takes it out of
    /// every other receive's reach (`MPI_Mprobe`): the returned [`Message`]
    /// is the only way to receive it. The status's `count` is in bytes.
    /// With [`Rank::NULL`] the message is empty and its status
    /// [`Status::EMPTY`].
    pub fn mprobe(
        &self,
        src: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<(Message<'_>, Status)> {
        let (src, tag) = (src.into(), tag.into());
        let (pattern, peer) = match self.probe_pattern(src, tag)? {
            Some(p) => p,
            None => return Ok((Message { comm: self, matched: None }, Status::EMPTY)),
        };
        let mut found = None;
        self.block_until(|e| {
            found = e.take_matched(self.context(), pattern);
            found.is_some() || peer.is_some_and(|p| e.is_lost(p))
        })?;
        match found {
            Some(m) => {
                let status = status_of(m.envelope());
                Ok((Message { comm: self, matched: Some(m) }, status))
            }
            None => Err(self.probe_loss(peer)),
        }
    }

    /// Like [`mprobe`](Self::mprobe), but returns `None` at once when no
    /// such message has arrived (`MPI_Improbe`).
    pub fn improbe(
        &self,
        src: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<Option<(Message<'_>, Status)>> {
        let (src, tag) = (src.into(), tag.into());
        let Some((pattern, _)) = self.probe_pattern(src, tag)? else {
            return Ok(Some((Message { comm: self, matched: None }, Status::EMPTY)));
        };
        let mut engine = self.engine().lock()?;
        engine.progress()?;
        Ok(engine.take_matched(self.context(), pattern).map(|m| {
            let status = status_of(m.envelope());
            (Message { comm: self, matched: Some(m) }, status)
        }))
    }

    /// Receives a message of any length that `src` and `tag` accept into a
    /// new vector of exactly its length: a matched probe, then the receive.
    /// The status's `count` is in elements. A message that is not a whole
    /// number of `T`s is an [`Error::PartialElement`] and stays to be
    /// received otherwise.
    pub fn recv_vec<T: Pod>(
        &self,
        src: impl Into<Rank>,
        tag: impl Into<Tag>,
    ) -> Result<(Vec<T>, Status)> {
        let (message, _) = self.mprobe(src, tag)?;
        message.recv_vec()
    }
}

impl<'c> Message<'c> {
    /// The message's source, tag and length in bytes ([`Status::EMPTY`]
    /// for the null process's, and once received).
    pub fn status(&self) -> Status {
        self.matched.as_ref().map_or(Status::EMPTY, |m| status_of(m.envelope()))
    }

    /// Receives the message into `buf` (`MPI_Mrecv`): its status, `count` in
    /// elements. A message longer than `buf` is [`Error::Truncated`] (and
    /// consumed, as a receive's would be).
    pub fn recv<T: Pod>(mut self, buf: &mut [T]) -> Result<Status> {
        let bytes = as_bytes_mut(buf)?;
        let Some(matched) = self.matched.take() else {
            return Ok(Status::EMPTY);
        };
        let comm = self.comm;
        let _claim = match comm.engine().claim() {
            Ok(claim) => claim,
            Err(e) => {
                self.matched = Some(matched);
                return Err(e);
            }
        };
        comm.engine().regions().scope(|scope| {
            let region = scope.register_mut(bytes);
            // Held by this thread's claim: the lock is free.
            let id = comm.engine().lock()?.receive_matched(matched, region)?;
            Communicator::status(comm.wait_id(id)?, std::mem::size_of::<T>())
        })
    }

    /// Receives the message into a new vector of exactly its length. A
    /// message that is not a whole number of `T`s is an
    /// [`Error::PartialElement`], and the message is put back.
    pub fn recv_vec<T: Pod>(self) -> Result<(Vec<T>, Status)> {
        let bytes = self.status().count;
        let elem = std::mem::size_of::<T>();
        if elem == 0 || bytes % elem != 0 {
            return Err(Error::PartialElement { bytes, elem_size: elem });
        }
        let mut values = vec![T::zeroed(); bytes / elem];
        let status = self.recv(&mut values)?;
        Ok((values, status))
    }

    /// The matched message, for a receive on `comm`'s scope.
    fn take_for(&mut self, comm: &Communicator) -> Result<Option<Matched>> {
        match &self.matched {
            Some(m) if !comm.same_as(self.comm) => Err(Error::InvalidRequest(format!(
                "a message matched on communicator {:?} received on {:?}",
                m.ctx(),
                comm.context()
            ))),
            _ => Ok(self.matched.take()),
        }
    }
}

impl Drop for Message<'_> {
    fn drop(&mut self) {
        if let Some(m) = self.matched.take() {
            // Not received: back where it was, for the next receive. The
            // engine is free when user code runs on the thread that holds
            // the endpoint; only a drop on another thread meanwhile finds
            // it held.
            match self.comm.engine().lock() {
                Ok(mut engine) => engine.restore_matched(m),
                Err(e) => tracing::warn!(
                    "a matched message dropped unreceived could not be put back ({e}): it is lost"
                ),
            }
        }
    }
}

impl<'s> Scope<'s, '_> {
    /// Starts the receive of a matched message into `buf` (`MPI_Imrecv`).
    /// A message matched on another communicator is an
    /// [`Error::InvalidRequest`] (and is put back).
    pub fn imrecv<T: Pod>(
        &self,
        mut message: Message<'_>,
        buf: &'s mut [T],
    ) -> Result<Request<'_>> {
        let elem = std::mem::size_of::<T>();
        let bytes = as_bytes_mut(buf)?;
        // The engine first: once taken from its handle, the message must
        // reach it (a scope's thread holds the endpoint, so this succeeds).
        let mut engine = self.comm().engine().lock()?;
        match message.take_for(self.comm())? {
            None => Ok(self.ready(Status::EMPTY, elem)),
            Some(matched) => {
                let region = self.regions().register_mut(bytes);
                let id = engine.receive_matched(matched, region)?;
                drop(engine);
                Ok(self.started(id, elem))
            }
        }
    }
}
