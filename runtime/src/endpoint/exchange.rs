//! The key-value exchange a backend sets up over, served by a
//! communicator: how the ranks of a running job open more endpoints
//! without the launcher.
//!
//! A fence sends this rank's puts since the last one to every other rank
//! and receives theirs. A backend that fails to open may stop calling
//! fences at any point; so every rank ends with a *final* message to all
//! (whether it opened), and a rank in a fence that receives a final one
//! instead of a fence's knows its peer has stopped: the fence fails, and
//! that rank's backend fails to open too. Each rank then reads every
//! peer's messages up to its final one, so none is left behind, and all
//! know who failed.

use std::collections::HashMap;

use hpcomm_transport::exchange::Exchange;

use crate::comm::{Communicator, ENDPOINTS_TAG};
use crate::error::{Error, Result};

/// What a message of the exchange is.
const FENCE: u8 = 1;
const FINAL_OK: u8 = 2;
const FINAL_FAILED: u8 = 3;

/// An [`Exchange`] among the ranks of a communicator.
pub(crate) struct CommExchange {
    comm: Communicator,
    job: String,
    /// Puts since the last fence.
    pending: Vec<(String, Vec<u8>)>,
    /// Every put seen at a fence.
    seen: HashMap<String, Vec<u8>>,
    /// Each rank's end once its final message came: `None` if it opened,
    /// `Some(why)` if not.
    ended: Vec<Option<Option<String>>>,
}

impl CommExchange {
    pub(crate) fn new(comm: &Communicator, job: &str) -> CommExchange {
        CommExchange {
            comm: comm.collective_view(),
            job: job.to_string(),
            pending: Vec::new(),
            seen: HashMap::new(),
            ended: vec![None; comm.size()],
        }
    }

    /// The other ranks.
    fn others(&self) -> Vec<usize> {
        let me = self.comm.rank();
        (0..self.comm.size()).filter(|&r| r != me).collect()
    }

    /// Sends `message` to every other rank, then receives one message
    /// from each that has not ended: their kinds and bodies.
    fn round(&mut self, message: &[u8]) -> Result<Vec<(usize, u8, Vec<u8>)>> {
        let comm = &self.comm;
        let others = self.others();
        let waiting: Vec<usize> =
            others.iter().copied().filter(|&r| self.ended[r].is_none()).collect();
        comm.scope(|s| {
            for &r in &others {
                drop(s.isend(message, r, ENDPOINTS_TAG)?);
            }
            waiting
                .iter()
                .map(|&r| {
                    let (bytes, _) = comm.recv_vec::<u8>(r, ENDPOINTS_TAG)?;
                    let (&kind, body) = bytes.split_first().ok_or_else(|| malformed(r))?;
                    Ok((r, kind, body.to_vec()))
                })
                .collect()
        })
    }

    /// Ends the exchange with this rank's outcome (`Some(why)` if its
    /// backend failed to open): reads every peer's messages up to its
    /// final one. Returns the lowest rank that failed and why, if any.
    pub(crate) fn finish(&mut self, failed: Option<String>) -> Result<Option<(usize, String)>> {
        let mut message = vec![if failed.is_some() { FINAL_FAILED } else { FINAL_OK }];
        message.extend_from_slice(failed.as_deref().unwrap_or("").as_bytes());
        let me = self.comm.rank();
        self.ended[me] = Some(failed);
        let mut round = self.round(&message)?;
        loop {
            for (rank, kind, body) in round {
                match kind {
                    FENCE => {}
                    FINAL_OK => self.ended[rank] = Some(None),
                    FINAL_FAILED => {
                        self.ended[rank] = Some(Some(String::from_utf8_lossy(&body).into_owned()))
                    }
                    _ => return Err(malformed(rank)),
                }
            }
            // Peers still in their fences: their next messages.
            let waiting: Vec<usize> =
                self.others().into_iter().filter(|&r| self.ended[r].is_none()).collect();
            if waiting.is_empty() {
                break;
            }
            round = waiting
                .into_iter()
                .map(|r| {
                    let (bytes, _) = self.comm.recv_vec::<u8>(r, ENDPOINTS_TAG)?;
                    let (&kind, body) = bytes.split_first().ok_or_else(|| malformed(r))?;
                    Ok((r, kind, body.to_vec()))
                })
                .collect::<Result<_>>()?;
        }
        Ok(self
            .ended
            .iter()
            .enumerate()
            .find_map(|(rank, end)| end.clone().flatten().map(|why| (rank, why))))
    }
}

fn malformed(rank: usize) -> Error {
    Error::Protocol(format!("rank {rank} sent a malformed endpoint set-up message"))
}

/// This rank's puts as a fence's message: kind, then each key and value
/// with their lengths.
fn encode(puts: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = vec![FENCE];
    for (key, value) in puts {
        for field in [key.as_bytes(), value.as_slice()] {
            out.extend_from_slice(&(field.len() as u32).to_le_bytes());
            out.extend_from_slice(field);
        }
    }
    out
}

/// A fence message's puts; `None` if it is malformed.
fn decode(mut body: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let field = |body: &mut &[u8]| {
        let (len, rest) = body.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let value = rest.get(..len)?;
        *body = &rest[len..];
        Some(value.to_vec())
    };
    let mut puts = Vec::new();
    while !body.is_empty() {
        let key = String::from_utf8(field(&mut body)?).ok()?;
        puts.push((key, field(&mut body)?));
    }
    Some(puts)
}

impl Exchange for CommExchange {
    fn job_id(&self) -> &str {
        &self.job
    }

    fn put(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        self.pending.push((key.to_string(), value.to_vec()));
        Ok(())
    }

    fn get(&mut self, key: &str) -> std::result::Result<Vec<u8>, String> {
        self.seen.get(key).cloned().ok_or_else(|| format!("no value under {key:?}"))
    }

    fn fence(&mut self) -> std::result::Result<(), String> {
        let puts = std::mem::take(&mut self.pending);
        let round = self.round(&encode(&puts)).map_err(|e| e.to_string())?;
        let mut stopped = None;
        for (rank, kind, body) in round {
            match kind {
                FENCE => {
                    let theirs = decode(&body).ok_or_else(|| malformed(rank).to_string())?;
                    self.seen.extend(theirs);
                }
                FINAL_OK | FINAL_FAILED => {
                    let why =
                        (kind == FINAL_FAILED).then(|| String::from_utf8_lossy(&body).into_owned());
                    self.ended[rank] = Some(why);
                    stopped.get_or_insert(rank);
                }
                _ => return Err(malformed(rank).to_string()),
            }
        }
        self.seen.extend(puts);
        match stopped.or_else(|| self.ended.iter().position(Option::is_some)) {
            Some(rank) => Err(format!("rank {rank} stopped setting up")),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn puts_round_trip_and_malformed_messages_are_refused() {
        let puts = vec![("addr-0".to_string(), vec![1, 2, 3]), ("k".to_string(), vec![])];
        let message = encode(&puts);
        assert_eq!(message[0], FENCE);
        assert_eq!(decode(&message[1..]), Some(puts));
        assert_eq!(decode(&[]), Some(vec![]));
        // A length past the end, a key without a value, a key not UTF-8.
        assert_eq!(decode(&[9, 0, 0, 0, b'a']), None);
        assert_eq!(decode(&[1, 0, 0, 0, b'a']), None);
        assert_eq!(decode(&[1, 0, 0, 0, 0xff, 0, 0, 0, 0]), None);
    }
}
