//! What a backend needs from the job's bootstrap while it sets up: a
//! key-value store shared by the ranks, and a fence.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::TransportError;

/// The bootstrap services a backend uses to set up (publish a segment name
/// or an address, wait until every rank has attached). The runtime provides
/// one over the launcher's key-value server; [`Local`] serves ranks that are
/// threads of one process.
pub trait Exchange {
    /// The job's identifier, unique on this host while it runs.
    fn job_id(&self) -> &str;
    /// Publishes `value` under `key` (keys are job-wide). Other ranks are
    /// sure to see it only after the next fence: a PMI server holds puts
    /// until then.
    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
    /// Returns the value under `key`, put before a fence this rank has
    /// passed (some exchanges also wait for a later put; none need to).
    fn get(&mut self, key: &str) -> Result<Vec<u8>, String>;
    /// Returns once every rank of the job has called `fence` as many times.
    fn fence(&mut self) -> Result<(), String>;

    /// Publishes rank `me`'s `value` under `key`, waits until each of the
    /// job's `ranks` has (a fence), and returns every rank's value in rank
    /// order. Every rank calls it, as it calls `fence`.
    ///
    /// The default is a put, a fence and a get per rank: `ranks` round
    /// trips. An exchange whose server can gather (`hpcomm run`'s) makes it
    /// one.
    fn allgather(
        &mut self,
        me: usize,
        ranks: usize,
        key: &str,
        value: &[u8],
    ) -> Result<Vec<Vec<u8>>, String> {
        self.put(&format!("{key}-{me}"), value)?;
        self.fence()?;
        (0..ranks).map(|r| self.get(&format!("{key}-{r}"))).collect()
    }
}

#[derive(Debug, Default)]
struct State {
    values: HashMap<String, Vec<u8>>,
    arrived: usize,
    generation: u64,
    aborted: Option<String>,
}

/// How long a rank waits for the others before giving up.
const PATIENCE: Duration = Duration::from_secs(60);

/// An [`Exchange`] for ranks that are threads of this process.
#[derive(Clone, Debug)]
pub struct Local {
    shared: Arc<(Mutex<State>, Condvar)>,
    ranks: usize,
    job: String,
}

/// Sets up the endpoints of a job whose `ranks` are threads of this
/// process, concurrently and in rank order, with `open(rank, exchange)` —
/// a backend's `open` over a [`Local`] exchange. A rank that fails aborts
/// the exchange, so that the others stop waiting for it.
pub fn local_job<T: Send>(
    ranks: usize,
    open: impl Fn(usize, &mut Local) -> Result<T, TransportError> + Sync,
) -> Result<Vec<T>, TransportError> {
    let exchange = Local::new(ranks);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..ranks)
            .map(|me| {
                let mut exchange = exchange.clone();
                let open = &open;
                s.spawn(move || {
                    let opened = open(me, &mut exchange);
                    if let Err(e) = &opened {
                        exchange.abort(&format!("rank {me}: {e}"));
                    }
                    opened
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join().unwrap_or_else(|_| {
                    Err(TransportError::Setup("a rank panicked while setting up".into()))
                })
            })
            .collect()
    })
}

impl Local {
    /// The exchange of a new job of `ranks` threads; clone it for each.
    pub fn new(ranks: usize) -> Local {
        let job = format!(
            "local{}x{}",
            rustix::process::getpid().as_raw_nonzero(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        );
        Local { shared: Arc::default(), ranks, job }
    }

    /// Fails every present and future wait of the job's ranks with `reason`
    /// (a rank could not set up: the others must not wait for it).
    pub fn abort(&self, reason: &str) {
        let (lock, cv) = &*self.shared;
        let mut state = lock.lock().unwrap_or_else(|e| e.into_inner());
        state.aborted.get_or_insert_with(|| reason.to_string());
        cv.notify_all();
    }

    /// Waits on the condition variable, failing on abort or after
    /// [`PATIENCE`].
    fn wait<'a>(
        &'a self,
        state: MutexGuard<'a, State>,
        since: Instant,
        what: &str,
    ) -> Result<MutexGuard<'a, State>, String> {
        if let Some(reason) = &state.aborted {
            return Err(format!("job aborted: {reason}"));
        }
        let left = PATIENCE
            .checked_sub(since.elapsed())
            .ok_or_else(|| format!("timed out after {PATIENCE:?} waiting for {what}"))?;
        let (state, _) = self.shared.1.wait_timeout(state, left).map_err(|e| e.to_string())?;
        Ok(state)
    }
}

impl Exchange for Local {
    fn job_id(&self) -> &str {
        &self.job
    }

    fn put(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        let (lock, cv) = &*self.shared;
        lock.lock().map_err(|e| e.to_string())?.values.insert(key.to_string(), value.to_vec());
        cv.notify_all();
        Ok(())
    }

    fn get(&mut self, key: &str) -> Result<Vec<u8>, String> {
        let since = Instant::now();
        let mut state = self.shared.0.lock().map_err(|e| e.to_string())?;
        loop {
            if let Some(v) = state.values.get(key) {
                return Ok(v.clone());
            }
            state = self.wait(state, since, key)?;
        }
    }

    fn fence(&mut self) -> Result<(), String> {
        let since = Instant::now();
        let mut state = self.shared.0.lock().map_err(|e| e.to_string())?;
        let generation = state.generation;
        state.arrived += 1;
        if state.arrived == self.ranks {
            state.arrived = 0;
            state.generation += 1;
            self.shared.1.notify_all();
            return Ok(());
        }
        while state.generation == generation {
            state = self.wait(state, since, "the other ranks at a fence")?;
        }
        Ok(())
    }
}
