//! The PMI-1 wire protocol: MPICH's Hydra `mpiexec` (and Slurm's pmi2
//! plugin, which serves it too).
//!
//! The connection is `PMI_FD`, a socket the launcher left open, or
//! `PMI_PORT` (`host:port`) with `PMI_ID`. Requests and answers are lines of
//! `cmd=NAME key=value …`; a server may order the fields as it likes, so an
//! answer is read as a set of keys. One request is written at a time and
//! its answer awaited. Values travel hex-encoded (a PMI value cannot hold
//! spaces) and must fit the server's `get_maxes`.

use std::collections::HashMap;
use std::net::{IpAddr, TcpStream};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::kvs_protocol::{hex_decode, hex_encode, truncated};
use super::kvs_server::Kvs;
use super::line::Conn;
use super::{mapping, vars, Bootstrap, Exchange, KvsClient};
use crate::error::{Error, Result};

const NAME: &str = "PMI-1 (mpiexec)";

/// An answer's fields; `cmd` among them.
pub type Fields = HashMap<String, String>;

/// Parses a PMI-1 line: `cmd=NAME key=value …`, fields in any order. A word
/// without `=` continues the previous value (servers put spaces in `msg`).
pub fn parse_line(line: &str) -> std::result::Result<Fields, String> {
    let mut fields = Fields::new();
    let mut last: Option<String> = None;
    for word in line.split_whitespace() {
        match word.split_once('=') {
            Some((key, value)) if !key.is_empty() => {
                fields.insert(key.to_string(), value.to_string());
                last = Some(key.to_string());
            }
            _ => match last.as_ref().and_then(|k| fields.get_mut(k)) {
                Some(value) => {
                    value.push(' ');
                    value.push_str(word);
                }
                None => return Err(format!("malformed PMI line {:?}", truncated(line))),
            },
        }
    }
    if !fields.contains_key("cmd") {
        return Err(format!("a PMI line without cmd: {:?}", truncated(line)));
    }
    Ok(fields)
}

/// A value as it travels in PMI: hex, `-` when empty.
pub fn encode_value(value: &[u8]) -> String {
    if value.is_empty() {
        "-".into()
    } else {
        hex_encode(value)
    }
}

/// The inverse of [`encode_value`].
pub fn decode_value(text: &str) -> Option<Vec<u8>> {
    if text == "-" {
        Some(Vec::new())
    } else {
        hex_decode(text)
    }
}

/// The launcher's socket: `PMI_FD`, or a connection to `PMI_PORT` (after
/// which `PMI_ID` must be presented, by PMI-1's `initack`).
pub(super) fn socket(
    lookup: &impl Fn(&str) -> Option<String>,
    name: &str,
    timeout: Duration,
) -> Result<UnixStream> {
    let fail = |m: String| Error::Bootstrap(format!("{name}: {m}"));
    let stream = if let Some(fd) = lookup(vars::pmi::FD) {
        let fd = fd
            .trim()
            .parse()
            .map_err(|_| fail(format!("{}={fd:?} is not a descriptor", vars::pmi::FD)))?;
        hpcomm_transport::inherited::adopt_socket(fd)
            .map_err(|e| fail(format!("{}: {e}", vars::pmi::FD)))?
    } else if let Some(port) = lookup(vars::pmi::PORT) {
        let stream = TcpStream::connect(port.trim()).map_err(|e| {
            fail(format!("cannot reach the server at {}={port}: {e}", vars::pmi::PORT))
        })?;
        stream.set_nodelay(true).ok();
        UnixStream::from(std::os::fd::OwnedFd::from(stream))
    } else {
        return Err(fail(format!("neither {} nor {} is set", vars::pmi::FD, vars::pmi::PORT)));
    };
    stream.set_read_timeout(Some(timeout)).map_err(|e| fail(e.to_string()))?;
    Ok(stream)
}

/// A rank's PMI-1 connection.
#[derive(Debug)]
pub struct Pmi1 {
    conn: Conn<UnixStream>,
    rank: usize,
    size: usize,
    kvsname: String,
    job: String,
    key_max: usize,
    value_max: usize,
    node: Option<String>,
    /// The job's key-value store, served by rank 0 (see `super::relay`).
    relay: Option<(KvsClient, Option<Kvs>)>,
}

impl Pmi1 {
    /// Connects to the launcher the environment `lookup` names; every
    /// answer is awaited at most `timeout`; rank 0 serves the job's
    /// key-value store on `bind` (default: the default route's address).
    pub fn connect(
        lookup: &impl Fn(&str) -> Option<String>,
        timeout: Duration,
        bind: Option<IpAddr>,
    ) -> Result<Pmi1> {
        let stream = socket(lookup, NAME, timeout)?;
        Pmi1::start(Conn::new(stream), lookup, timeout, bind)
    }

    /// The PMI-1 handshake over `conn`, then the job's key-value store.
    pub fn start(
        conn: Conn<UnixStream>,
        lookup: &impl Fn(&str) -> Option<String>,
        timeout: Duration,
        bind: Option<IpAddr>,
    ) -> Result<Pmi1> {
        let mut pmi = Pmi1 {
            conn,
            rank: 0,
            size: 0,
            kvsname: String::new(),
            job: String::new(),
            key_max: 64,
            value_max: 1024,
            node: None,
            relay: None,
        };
        pmi.handshake(lookup, timeout, bind).map_err(|e| super::named(NAME, e))?;
        Ok(pmi)
    }

    fn handshake(
        &mut self,
        lookup: &impl Fn(&str) -> Option<String>,
        timeout: Duration,
        bind: Option<IpAddr>,
    ) -> std::result::Result<(), String> {
        let number = |fields: &Fields, key: &str| -> std::result::Result<usize, String> {
            let v = fields.get(key).ok_or_else(|| format!("the answer has no {key}"))?;
            v.parse().map_err(|_| format!("{key}={v:?} is not a number"))
        };
        let env_number = |name: &str| -> std::result::Result<Option<usize>, String> {
            lookup(name)
                .map(|v| v.trim().parse().map_err(|_| format!("{name}={v:?} is not a number")))
                .transpose()
        };
        let (mut rank, mut size) = (env_number(vars::pmi::RANK)?, env_number(vars::pmi::SIZE)?);
        if lookup(vars::pmi::FD).is_none() {
            // PMI_PORT: present our id; the server says rank and size.
            let id =
                lookup(vars::pmi::ID).ok_or_else(|| format!("{} is not set", vars::pmi::ID))?;
            self.conn.send(format!("cmd=initack pmiid={}\n", id.trim()).as_bytes())?;
            self.expect("initack")?;
            for _ in 0..3 {
                let set = self.read("set")?;
                if let Some(v) = set.get("size") {
                    size = Some(v.parse().map_err(|_| format!("size={v:?}"))?);
                }
                if let Some(v) = set.get("rank") {
                    rank = Some(v.parse().map_err(|_| format!("rank={v:?}"))?);
                }
            }
        }
        let init = self.request("cmd=init pmi_version=1 pmi_subversion=1", "response_to_init")?;
        if init.get("pmi_version").map(String::as_str) != Some("1") {
            return Err(format!(
                "the server speaks PMI version {:?}, not 1",
                init.get("pmi_version")
            ));
        }
        let maxes = self.request("cmd=get_maxes", "maxes")?;
        // The maxima count a C string's terminating zero.
        self.key_max = number(&maxes, "keylen_max")?.saturating_sub(1);
        self.value_max = number(&maxes, "vallen_max")?.saturating_sub(1);
        let name = self.request("cmd=get_my_kvsname", "my_kvsname")?;
        self.kvsname = name.get("kvsname").cloned().ok_or("the answer has no kvsname")?;
        if self.kvsname.is_empty() || self.kvsname.contains(char::is_whitespace) {
            return Err(format!("a malformed kvsname {:?}", self.kvsname));
        }
        self.job = super::file_safe(&self.kvsname);
        self.rank = rank.ok_or_else(|| format!("{} is not set", vars::pmi::RANK))?;
        self.size = size.ok_or_else(|| format!("{} is not set", vars::pmi::SIZE))?;
        if self.size == 0 || self.rank >= self.size {
            return Err(format!("rank {} is not below the size {}", self.rank, self.size));
        }
        // Hydra publishes where it put the ranks; other servers may not.
        let mapping = self.request(
            &format!("cmd=get kvsname={} key=PMI_process_mapping", self.kvsname),
            "get_result",
        );
        if let Ok(Some(value)) = mapping.map(|f| f.get("value").cloned()) {
            match mapping::nodes_of(&value, self.size) {
                Ok(nodes) => self.node = Some(format!("pmi-node-{}", nodes[self.rank])),
                Err(e) => tracing::debug!("{NAME}: {e}; telling nodes apart by host instead"),
            }
        }
        let (rank, size) = (self.rank, self.size);
        self.relay = Some(super::relay(self, rank, size, timeout, bind)?);
        Ok(())
    }

    /// Reads one line, which must be `cmd=want`.
    fn read(&mut self, want: &str) -> std::result::Result<Fields, String> {
        let line = self.conn.line()?;
        let fields = parse_line(&line)?;
        match fields.get("cmd").map(String::as_str) {
            Some(cmd) if cmd == want => Ok(fields),
            other => Err(format!("expected cmd={want}, the server said {:?}", other.unwrap_or(""))),
        }
    }

    /// Reads `cmd=want`, whose `rc` must be 0.
    fn expect(&mut self, want: &str) -> std::result::Result<Fields, String> {
        let fields = self.read(want)?;
        match fields.get("rc").map(String::as_str) {
            None | Some("0") => Ok(fields),
            Some(rc) => Err(format!(
                "{want}: rc={rc} {}",
                fields.get("msg").map(String::as_str).unwrap_or("")
            )),
        }
    }

    /// Sends `line` and reads the answer `cmd=want`, whose `rc` must be 0.
    fn request(&mut self, line: &str, want: &str) -> std::result::Result<Fields, String> {
        self.conn.send(format!("{line}\n").as_bytes())?;
        self.expect(want)
    }

    fn check_key(&self, key: &str) -> std::result::Result<(), String> {
        if key.is_empty()
            || key.len() > self.key_max
            || key.contains(|c: char| c.is_whitespace() || c == '=')
        {
            return Err(format!(
                "key {key:?} does not fit the server's keys of {} bytes",
                self.key_max
            ));
        }
        Ok(())
    }
}

impl Exchange for Pmi1 {
    fn job_id(&self) -> &str {
        &self.job
    }

    fn put(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        self.check_key(key).map_err(|e| format!("{NAME}: {e}"))?;
        let value = encode_value(value);
        if value.len() > self.value_max {
            return Err(format!(
                "{NAME}: the value of {key} ({} bytes in hex) is longer than the server's \
                 vallen_max of {}",
                value.len(),
                self.value_max
            ));
        }
        let line = format!("cmd=put kvsname={} key={key} value={value}", self.kvsname);
        self.request(&line, "put_result").map(drop).map_err(|e| format!("{NAME}: put {key}: {e}"))
    }

    fn get(&mut self, key: &str) -> std::result::Result<Vec<u8>, String> {
        self.check_key(key).map_err(|e| format!("{NAME}: {e}"))?;
        let line = format!("cmd=get kvsname={} key={key}", self.kvsname);
        let fields =
            self.request(&line, "get_result").map_err(|e| format!("{NAME}: get {key}: {e}"))?;
        let value = fields.get("value").ok_or_else(|| format!("{NAME}: get {key}: no value"))?;
        decode_value(value).ok_or_else(|| format!("{NAME}: get {key}: a value that is not hex"))
    }

    fn fence(&mut self) -> std::result::Result<(), String> {
        self.conn.send(b"cmd=barrier_in\n").map_err(|e| format!("{NAME}: barrier: {e}"))?;
        self.read("barrier_out").map(drop).map_err(|e| format!("{NAME}: barrier: {e}"))
    }
}

impl Bootstrap for Pmi1 {
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
    fn local_ip(&self) -> Option<IpAddr> {
        self.relay.as_ref().and_then(|(client, _)| client.local_ip())
    }
    fn secret(&self) -> &str {
        self.relay.as_ref().map_or("", |(client, _)| client.secret())
    }
    fn exchange(&mut self) -> &mut dyn Exchange {
        if self.relay.is_none() {
            return self;
        }
        &mut self.relay.as_mut().expect("checked").0
    }
    fn abort(&mut self, code: i32, message: &str) {
        // Hydra takes a message only in PMI-2; say it here.
        eprintln!("hpcomm: rank {} aborts the job: {message}", self.rank);
        let _ = self.conn.send(format!("cmd=abort exitcode={code}\n").as_bytes());
    }
    fn finalize(&mut self) -> Result<()> {
        self.request("cmd=finalize", "finalize_ack")
            .map(drop)
            .map_err(|e| Error::Bootstrap(format!("{NAME}: finalize: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_read_as_key_sets() {
        // Hydra's spelling, and the same answers with the fields reordered
        // and a spaced message, as Slurm's plugin writes them.
        let hydra = parse_line("cmd=get_result rc=0 msg=success value=0aff").unwrap();
        assert_eq!(hydra["value"], "0aff");
        let slurm = parse_line("cmd=get_result value=0aff rc=0").unwrap();
        assert_eq!(slurm["value"], "0aff");
        let maxes =
            parse_line("cmd=maxes kvsname_max=256 keylen_max=64 vallen_max=1024 rc=0").unwrap();
        assert_eq!((maxes["keylen_max"].as_str(), maxes["vallen_max"].as_str()), ("64", "1024"));
        let missing = parse_line("cmd=get_result rc=-1 msg=key not found").unwrap();
        assert_eq!(missing["msg"], "key not found");
        assert!(parse_line("rc=0").is_err());
        assert!(parse_line("garbage cmd=x").is_err());
        assert_eq!(decode_value(&encode_value(b"")), Some(vec![]));
        assert_eq!(decode_value(&encode_value(b"\x00ab")), Some(b"\x00ab".to_vec()));
    }
}
