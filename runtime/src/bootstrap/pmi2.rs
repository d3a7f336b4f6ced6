//! The PMI-2 wire protocol: Slurm's `srun --mpi=pmi2` (Hydra serves it too).
//!
//! The client opens with PMI-1's `cmd=init` line asking for version 2;
//! after that every message is a frame: its length in 6 characters (padded
//! with spaces on either side, so trimmed) and a body of `key=value;`
//! pairs, `cmd` first, `;` inside a value doubled. Values travel
//! hex-encoded; PMI-2 keys hold 64 bytes and values 1024.
//!
//! `info-getjobattr PMI_process_mapping` says where every rank runs, so
//! ranks find their node neighbours without guessing from host names.

use std::collections::HashMap;
use std::net::IpAddr;
use std::os::unix::net::UnixStream;
use std::time::Duration;

use super::kvs_protocol::truncated;
use super::kvs_server::Kvs;
use super::line::Conn;
use super::pmi1::{decode_value, encode_value};
use super::{mapping, vars, Bootstrap, Exchange, KvsClient};
use crate::error::{Error, Result};

const NAME: &str = "PMI-2 (srun --mpi=pmi2)";
/// PMI-2's longest key and value.
const KEY_MAX: usize = 64;
const VALUE_MAX: usize = 1024;

/// A frame's fields.
pub type Fields = HashMap<String, String>;

/// Parses a frame's body: `cmd=NAME;key=value;…`, with `;;` standing for a
/// `;` inside a value.
pub fn parse_body(body: &str) -> std::result::Result<Fields, String> {
    let mut fields = Fields::new();
    let mut chars = body.chars().peekable();
    let mut pair = String::new();
    let mut finish = |pair: &mut String| -> std::result::Result<(), String> {
        if pair.is_empty() {
            return Ok(());
        }
        let (key, value) = pair
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| format!("malformed PMI-2 frame {:?}", truncated(body)))?;
        fields.insert(key.to_string(), value.to_string());
        pair.clear();
        Ok(())
    };
    while let Some(c) = chars.next() {
        if c == ';' {
            if chars.peek() == Some(&';') {
                chars.next();
                pair.push(';');
            } else {
                finish(&mut pair)?;
            }
        } else {
            pair.push(c);
        }
    }
    finish(&mut pair)?;
    if !fields.contains_key("cmd") {
        return Err(format!("a PMI-2 frame without cmd: {:?}", truncated(body)));
    }
    Ok(fields)
}

/// A frame for `pairs`, `cmd` first.
pub fn frame(pairs: &[(&str, &str)]) -> String {
    let mut body = String::new();
    for (key, value) in pairs {
        body.push_str(key);
        body.push('=');
        body.push_str(&value.replace(';', ";;"));
        body.push(';');
    }
    frame_body(&body)
}

/// `body` with its length in front.
pub fn frame_body(body: &str) -> String {
    format!("{:<6}{body}", body.len())
}

/// A rank's PMI-2 connection.
#[derive(Debug)]
pub struct Pmi2 {
    conn: Conn<UnixStream>,
    rank: usize,
    size: usize,
    jobid: String,
    job: String,
    node: Option<String>,
    /// The job's key-value store, served by rank 0 (see `super::relay`).
    relay: Option<(KvsClient, Option<Kvs>)>,
}

impl Pmi2 {
    /// Connects to the launcher the environment `lookup` names; every
    /// answer is awaited at most `timeout`; rank 0 serves the job's
    /// key-value store on `bind` (default: the default route's address).
    pub fn connect(
        lookup: &impl Fn(&str) -> Option<String>,
        timeout: Duration,
        bind: Option<IpAddr>,
    ) -> Result<Pmi2> {
        let stream = super::pmi1::socket(lookup, NAME, timeout)?;
        Pmi2::start(Conn::new(stream), lookup, timeout, bind)
    }

    /// The PMI-2 handshake over `conn`, then the job's key-value store.
    pub fn start(
        conn: Conn<UnixStream>,
        lookup: &impl Fn(&str) -> Option<String>,
        timeout: Duration,
        bind: Option<IpAddr>,
    ) -> Result<Pmi2> {
        let mut pmi = Pmi2 {
            conn,
            rank: 0,
            size: 0,
            jobid: String::new(),
            job: String::new(),
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
        self.conn.send(b"cmd=init pmi_version=2 pmi_subversion=0\n")?;
        let init = super::pmi1::parse_line(&self.conn.line()?)?;
        if init.get("cmd").map(String::as_str) != Some("response_to_init")
            || init.get("rc").is_some_and(|rc| rc != "0")
            || init.get("pmi_version").map(String::as_str) != Some("2")
        {
            return Err(format!("the server does not speak PMI-2: {init:?}"));
        }
        let rank =
            lookup(vars::pmi::RANK).ok_or_else(|| format!("{} is not set", vars::pmi::RANK))?;
        let rank = rank.trim().to_string();
        let mut pairs =
            vec![("cmd", "fullinit"), ("pmirank", rank.as_str()), ("threaded", "FALSE")];
        let jobid = lookup(vars::pmi::JOBID).map(|j| j.trim().to_string());
        if let Some(jobid) = &jobid {
            pairs.insert(1, ("pmijobid", jobid.as_str()));
        }
        let full = self.request(&pairs, "fullinit-response")?;
        let number = |key: &str| -> std::result::Result<usize, String> {
            let v = full.get(key).ok_or_else(|| format!("fullinit-response has no {key}"))?;
            v.parse().map_err(|_| format!("{key}={v:?} is not a number"))
        };
        self.rank = number("rank")?;
        self.size = number("size")?;
        if self.size == 0 || self.rank >= self.size {
            return Err(format!("rank {} is not below the size {}", self.rank, self.size));
        }
        let id = self.request(&[("cmd", "job-getid")], "job-getid-response")?;
        self.jobid = id.get("jobid").cloned().or(jobid).ok_or("the server names no job")?;
        self.job = super::file_safe(&self.jobid);
        let attr = self.request(
            &[("cmd", "info-getjobattr"), ("key", "PMI_process_mapping")],
            "info-getjobattr-response",
        )?;
        if let (Some("TRUE"), Some(value)) =
            (attr.get("found").map(String::as_str), attr.get("value"))
        {
            match mapping::nodes_of(value, self.size) {
                Ok(nodes) => self.node = Some(format!("pmi-node-{}", nodes[self.rank])),
                Err(e) => tracing::debug!("{NAME}: {e}; telling nodes apart by host instead"),
            }
        }
        let (rank, size) = (self.rank, self.size);
        self.relay = Some(super::relay(self, rank, size, timeout, bind)?);
        Ok(())
    }

    /// Sends a frame and reads the answer `cmd=want`, whose `rc` must be 0.
    fn request(
        &mut self,
        pairs: &[(&str, &str)],
        want: &str,
    ) -> std::result::Result<Fields, String> {
        self.conn.send(frame(pairs).as_bytes())?;
        let fields = self.read()?;
        match fields.get("cmd").map(String::as_str) {
            Some(cmd) if cmd == want => {}
            other => {
                return Err(format!(
                    "expected cmd={want}, the server said {:?}",
                    other.unwrap_or("")
                ))
            }
        }
        match fields.get("rc").map(String::as_str) {
            None | Some("0") => Ok(fields),
            Some(rc) => Err(format!(
                "{want}: rc={rc} {}",
                fields.get("errmsg").map(String::as_str).unwrap_or("")
            )),
        }
    }

    fn read(&mut self) -> std::result::Result<Fields, String> {
        let head = self.conn.exact(6)?;
        let len = std::str::from_utf8(&head)
            .ok()
            .and_then(|h| h.trim().parse::<usize>().ok())
            .ok_or_else(|| {
                format!("a malformed frame length {:?}", String::from_utf8_lossy(&head))
            })?;
        let body = self.conn.exact(len)?;
        parse_body(std::str::from_utf8(&body).map_err(|_| "a frame that is not UTF-8")?)
    }
}

fn check_key(key: &str) -> std::result::Result<(), String> {
    if key.is_empty() || key.len() > KEY_MAX || key.contains([';', '=']) {
        return Err(format!("key {key:?} does not fit PMI-2's keys of {KEY_MAX} bytes"));
    }
    Ok(())
}

impl Exchange for Pmi2 {
    fn job_id(&self) -> &str {
        &self.job
    }

    fn put(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        check_key(key).map_err(|e| format!("{NAME}: {e}"))?;
        let value = encode_value(value);
        if value.len() > VALUE_MAX {
            return Err(format!(
                "{NAME}: the value of {key} ({} bytes in hex) is longer than PMI-2's {VALUE_MAX}",
                value.len()
            ));
        }
        self.request(&[("cmd", "kvs-put"), ("key", key), ("value", &value)], "kvs-put-response")
            .map(drop)
            .map_err(|e| format!("{NAME}: kvs-put {key}: {e}"))
    }

    fn get(&mut self, key: &str) -> std::result::Result<Vec<u8>, String> {
        check_key(key).map_err(|e| format!("{NAME}: {e}"))?;
        let jobid = self.jobid.clone();
        let fields = self
            .request(
                &[("cmd", "kvs-get"), ("jobid", &jobid), ("srcid", "-1"), ("key", key)],
                "kvs-get-response",
            )
            .map_err(|e| format!("{NAME}: kvs-get {key}: {e}"))?;
        match (fields.get("found").map(String::as_str), fields.get("value")) {
            (Some("TRUE"), Some(value)) => decode_value(value)
                .ok_or_else(|| format!("{NAME}: kvs-get {key}: a value that is not hex")),
            _ => Err(format!("{NAME}: kvs-get {key}: no rank published it")),
        }
    }

    fn fence(&mut self) -> std::result::Result<(), String> {
        self.request(&[("cmd", "kvs-fence")], "kvs-fence-response")
            .map(drop)
            .map_err(|e| format!("{NAME}: kvs-fence: {e}"))
    }
}

impl Bootstrap for Pmi2 {
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
        eprintln!("hpcomm: rank {} aborts the job (exit code {code}): {message}", self.rank);
        let _ = self
            .conn
            .send(frame(&[("cmd", "abort"), ("isworld", "TRUE"), ("msg", message)]).as_bytes());
    }
    fn finalize(&mut self) -> Result<()> {
        self.request(&[("cmd", "finalize")], "finalize-response")
            .map(drop)
            .map_err(|e| Error::Bootstrap(format!("{NAME}: finalize: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_built_and_read() {
        assert_eq!(frame(&[("cmd", "kvs-fence")]), "14    cmd=kvs-fence;");
        assert_eq!(frame(&[("cmd", "abort"), ("msg", "a;b")]), "19    cmd=abort;msg=a;;b;");
        // Slurm's fullinit answer, as its plugin writes it.
        let full = parse_body(
            "cmd=fullinit-response;rc=0;pmi-version=2;pmi-subversion=0;rank=3;size=4;appnum=0;\
             debugged=FALSE;pmiverbose=FALSE;",
        )
        .unwrap();
        assert_eq!((full["rank"].as_str(), full["size"].as_str()), ("3", "4"));
        let attr =
            parse_body("cmd=info-getjobattr-response;rc=0;found=TRUE;value=(vector,(0,1,4));")
                .unwrap();
        assert_eq!(attr["value"], "(vector,(0,1,4))");
        let escaped = parse_body("cmd=x;msg=a;;b;;;k=v;").unwrap();
        assert_eq!((escaped["msg"].as_str(), escaped["k"].as_str()), ("a;b;", "v"));
        // A last pair without its `;` is still read.
        assert_eq!(parse_body("cmd=kvs-fence-response;rc=0").unwrap()["rc"], "0");
        assert!(parse_body("rc=0;").is_err());
        assert!(parse_body("cmd=x;=v;").is_err());
        assert!(parse_body("cmd=x;novalue;").is_err());
    }
}
