//! PMIx: Open MPI's `mpirun` (4.x) and `prterun` (5.x), and Slurm's
//! `srun --mpi=pmix`, through the PMIx client library loaded at run time
//! (`hpcomm_transport::pmix`; `HPCOMM_PMIX_LIBRARY` names another).
//!
//! PMIx keys belong to the process that put them, while [`Exchange`] keys
//! are job-wide, so each fence publishes one value per rank: everything
//! that rank put since the previous fence, under `hpcomm.<fence number>`.
//! The fence collects them all (`PMIX_COLLECT_DATA`), so that the reads
//! after it are served by the local PMIx server: one network exchange per
//! fence, whatever the job's size.

use std::collections::HashMap;

use hpcomm_transport::pmix::{Client, Got, RANK_WILDCARD};

use super::{shared_secret, vars, Bootstrap, Exchange};
use crate::error::{Error, Result};

const NAME: &str = "PMIx (mpirun, srun --mpi=pmix)";

/// A rank's PMIx client.
#[derive(Debug)]
pub struct Pmix {
    client: Client,
    rank: usize,
    size: usize,
    job: String,
    node: Option<String>,
    secret: String,
    /// Fences done.
    fences: u64,
    /// Puts since the last fence.
    pending: Vec<(String, Vec<u8>)>,
    /// Every value read so far, and this rank's own.
    known: HashMap<String, Vec<u8>>,
    /// Fences whose values have been read.
    fetched: u64,
}

/// Several key-value pairs as one value: for each, the key's and the
/// value's lengths (4 bytes each, little-endian) and their bytes.
fn encode(pairs: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (key, value) in pairs {
        out.extend_from_slice(&(key.len() as u32).to_le_bytes());
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        out.extend_from_slice(value);
    }
    out
}

/// The inverse of [`encode`]; refused when the bytes are not pairs.
fn decode(mut bytes: &[u8]) -> Option<Vec<(String, Vec<u8>)>> {
    let take = |bytes: &mut &[u8]| -> Option<Vec<u8>> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (item, rest) = (rest.get(..len)?, rest.get(len..)?);
        *bytes = rest;
        Some(item.to_vec())
    };
    let mut pairs = Vec::new();
    while !bytes.is_empty() {
        let key = String::from_utf8(take(&mut bytes)?).ok()?;
        let value = take(&mut bytes)?;
        pairs.push((key, value));
    }
    Some(pairs)
}

impl Pmix {
    /// Initializes the PMIx client of this process.
    pub fn connect(lookup: &impl Fn(&str) -> Option<String>) -> Result<Pmix> {
        let fail = |e: String| Error::Bootstrap(format!("{NAME}: {e}"));
        let library = lookup(vars::pmix::LIBRARY).filter(|l| !l.trim().is_empty());
        let client = Client::init(library.as_deref()).map_err(fail)?;
        let size = match client.get(RANK_WILDCARD, "pmix.job.size").map_err(fail)? {
            Got::Number(n) => n as usize,
            other => return Err(fail(format!("the job's size is {other:?}"))),
        };
        let rank = client.rank() as usize;
        if size == 0 || rank >= size {
            return Err(fail(format!("rank {rank} is not below the size {size}")));
        }
        let node = match client.get(client.rank(), "pmix.nodeid") {
            Ok(Got::Number(id)) => Some(format!("pmix-node-{id}")),
            _ => match client.get(client.rank(), "pmix.hname") {
                Ok(Got::Text(host)) if !host.is_empty() => Some(format!("pmix-host-{host}")),
                _ => None,
            },
        };
        let job = super::file_safe(&client.namespace());
        let mut pmix = Pmix {
            client,
            rank,
            size,
            job,
            node,
            secret: String::new(),
            fences: 0,
            pending: Vec::new(),
            known: HashMap::new(),
            fetched: 0,
        };
        pmix.secret = shared_secret(&mut pmix, rank).map_err(|e| super::named(NAME, e))?;
        Ok(pmix)
    }

    /// Reads every rank's values of the fences not read yet.
    fn fetch(&mut self) -> std::result::Result<(), String> {
        for fence in self.fetched..self.fences {
            let key = format!("hpcomm.{fence}");
            for r in 0..self.size {
                match self
                    .client
                    .get(r as u32, &key)
                    .map_err(|e| format!("{NAME}: rank {r}: {e}"))?
                {
                    Got::Bytes(bytes) => {
                        let pairs = decode(&bytes).ok_or_else(|| {
                            format!("{NAME}: rank {r} published malformed values")
                        })?;
                        self.known.extend(pairs);
                    }
                    other => return Err(format!("{NAME}: rank {r} published {other:?}")),
                }
            }
        }
        self.fetched = self.fences;
        Ok(())
    }
}

impl Exchange for Pmix {
    fn job_id(&self) -> &str {
        &self.job
    }

    fn put(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        self.pending.push((key.to_string(), value.to_vec()));
        self.known.insert(key.to_string(), value.to_vec());
        Ok(())
    }

    fn get(&mut self, key: &str) -> std::result::Result<Vec<u8>, String> {
        if !self.known.contains_key(key) {
            self.fetch()?;
        }
        self.known.get(key).cloned().ok_or_else(|| format!("{NAME}: no rank published {key}"))
    }

    fn fence(&mut self) -> std::result::Result<(), String> {
        let fail = |e: String| format!("{NAME}: fence: {e}");
        let values = encode(&std::mem::take(&mut self.pending));
        self.client.put(&format!("hpcomm.{}", self.fences), &values).map_err(fail)?;
        self.client.commit().map_err(fail)?;
        self.client.fence().map_err(fail)?;
        self.fences += 1;
        Ok(())
    }
}

impl Bootstrap for Pmix {
    fn name(&self) -> &'static str {
        NAME
    }
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn node(&self) -> Option<String> {
        self.node.clone()
    }
    fn secret(&self) -> &str {
        &self.secret
    }
    fn exchange(&mut self) -> &mut dyn Exchange {
        self
    }
    fn abort(&mut self, code: i32, message: &str) {
        self.client.abort(code, message);
    }
    fn finalize(&mut self) -> Result<()> {
        self.client.finalize().map_err(|e| Error::Bootstrap(format!("{NAME}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn published_values_round_trip_and_garbage_is_refused() {
        let pairs = vec![("tcp-1".to_string(), b"10.0.0.1:5".to_vec()), ("e".into(), vec![])];
        assert_eq!(decode(&encode(&pairs)), Some(pairs));
        assert_eq!(decode(&[]), Some(vec![]));
        assert_eq!(decode(&[1, 0, 0]), None);
        assert_eq!(decode(&[9, 0, 0, 0, b'k']), None);
        assert_eq!(decode(&[1, 0, 0, 0, 0xff, 0, 0, 0, 0]), None);
    }
}
