//! `hpcomm run`'s bootstrap: a rank's client of the launcher's key-value
//! server (the protocol is in [`super::kvs_protocol`]).
//!
//! `allgather` is one `GATHER` request: the server answers once every rank
//! has sent its value, with all of them, so publishing and reading every
//! rank's address costs each rank one round trip.

use std::net::{IpAddr, TcpStream};
use std::time::Duration;

use hpcomm_transport::Exchange;

use super::kvs_protocol::{Answer, Peer, Request};
use super::line::Conn;
use super::Bootstrap;
use crate::config::Launch;
use crate::error::{Error, Result};

const NAME: &str = "hpcomm run";

/// A rank's connection to the key-value server.
#[derive(Debug)]
pub struct KvsClient {
    conn: Conn<TcpStream>,
    rank: usize,
    size: usize,
    job: String,
    secret: String,
    /// Set once the connection only watches the launcher.
    watching: bool,
}

fn lost(e: impl std::fmt::Display) -> String {
    format!("{NAME}'s key-value server: {e}")
}

impl KvsClient {
    /// Connects and authenticates; every later answer is awaited at most
    /// `timeout`.
    pub fn connect(launch: &Launch, timeout: Duration) -> Result<KvsClient> {
        let stream =
            TcpStream::connect_timeout(&launch.kvs, Duration::from_secs(10)).map_err(|e| {
                Error::Bootstrap(format!("cannot reach the launcher at {}: {e}", launch.kvs))
            })?;
        stream.set_nodelay(true).ok();
        hpcomm_transport::tcp::bound_retransmission_timeout(&stream);
        stream.set_read_timeout(Some(timeout)).map_err(|e| Error::Bootstrap(lost(e)))?;
        let mut client = KvsClient {
            conn: Conn::new(stream),
            rank: launch.rank,
            size: launch.size,
            job: launch.job.clone(),
            secret: launch.secret.clone(),
            watching: false,
        };
        let hello = Request::Hello { secret: launch.secret.clone(), peer: Peer::Rank(launch.rank) };
        match client.request(&hello).map_err(Error::Bootstrap)? {
            Answer::Ok => Ok(client),
            other => {
                Err(Error::Bootstrap(format!("the launcher refused this rank: {}", other.line())))
            }
        }
    }

    /// The job's secret, which this client presented.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// This end's address of the connection to the launcher: an address of
    /// this host from which the launcher's host is reachable.
    pub fn local_ip(&self) -> Option<IpAddr> {
        self.conn.stream().local_addr().ok().map(|a| a.ip())
    }

    /// Keeps the connection open for the rest of the process's life and
    /// ends the process when it closes: the launcher is gone (killed, its
    /// host lost, interrupted), and a rank it started on another host must
    /// not run on as an orphan. The server sends nothing unasked, so any
    /// end of the connection means that.
    fn watch_launcher(&mut self) -> Result<()> {
        let mut stream = self.conn.stream().try_clone().map_err(|e| Error::Bootstrap(lost(e)))?;
        stream.set_read_timeout(None).map_err(|e| Error::Bootstrap(lost(e)))?;
        std::thread::Builder::new()
            .name("hpcomm-launcher-watch".into())
            .spawn(move || {
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
                eprintln!("hpcomm: the launcher is gone (its connection closed); ending this rank");
                std::process::exit(1);
            })
            .map(drop)
            .map_err(|e| Error::Bootstrap(format!("cannot watch the launcher: {e}")))?;
        self.watching = true;
        Ok(())
    }

    fn request(&mut self, request: &Request) -> std::result::Result<Answer, String> {
        if self.watching {
            return Err(lost("the set-up is over"));
        }
        self.conn.send(format!("{}\n", request.line()).as_bytes()).map_err(lost)?;
        let line = self.conn.line().map_err(lost)?;
        Answer::parse(&line).map_err(lost)
    }
}

impl Exchange for KvsClient {
    fn job_id(&self) -> &str {
        &self.job
    }

    fn put(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        match self.request(&Request::Put { key: key.into(), value: value.to_vec() })? {
            Answer::Ok => Ok(()),
            other => Err(lost(format!("PUT {key}: {}", other.line()))),
        }
    }

    fn get(&mut self, key: &str) -> std::result::Result<Vec<u8>, String> {
        match self.request(&Request::Get { key: key.into() })? {
            Answer::Value(v) => Ok(v),
            other => Err(lost(format!("GET {key}: {}", other.line()))),
        }
    }

    fn fence(&mut self) -> std::result::Result<(), String> {
        match self.request(&Request::Fence)? {
            Answer::Ok => Ok(()),
            other => Err(lost(format!("FENCE: {}", other.line()))),
        }
    }

    fn allgather(
        &mut self,
        _me: usize,
        ranks: usize,
        key: &str,
        value: &[u8],
    ) -> std::result::Result<Vec<Vec<u8>>, String> {
        match self.request(&Request::Gather { key: key.into(), value: value.to_vec() })? {
            Answer::All(values) if values.len() == ranks => Ok(values),
            Answer::All(values) => {
                Err(lost(format!("GATHER {key}: {} values for {ranks} ranks", values.len())))
            }
            other => Err(lost(format!("GATHER {key}: {}", other.line()))),
        }
    }
}

impl Bootstrap for KvsClient {
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
        None
    }
    fn local_ip(&self) -> Option<IpAddr> {
        KvsClient::local_ip(self)
    }
    fn secret(&self) -> &str {
        &self.secret
    }
    fn exchange(&mut self) -> &mut dyn Exchange {
        self
    }
    fn ready(&mut self) -> Result<()> {
        self.watch_launcher()
    }
    fn abort(&mut self, code: i32, message: &str) {
        let line = Request::Abort { code, message: message.into() }.line();
        let _ = self.conn.send(format!("{line}\n").as_bytes());
    }
}
