//! Joining a launched job: the client of `hpcomm run`'s key-value server.
//!
//! The protocol is line-based text over TCP, one request and one answer per
//! line; values travel hex-encoded:
//!
//! | request | answer |
//! |---|---|
//! | `HELLO <secret> <rank>` (first, always) | `OK`, or `ERR <reason>` and the connection closes |
//! | `PUT <key> <hex>` | `OK` |
//! | `GET <key>` | `VAL <hex>`, once some rank has put `key` |
//! | `FENCE` | `OK`, once every rank has sent as many `FENCE`s |
//!
//! The server (in the `hpcomm` command) refuses and logs any connection
//! whose first line does not carry the job's secret.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use hpcomm_transport::Exchange;

use crate::config::Launch;
use crate::error::{Error, Result};

/// Encodes bytes as lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Decodes lowercase or uppercase hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

/// A rank's connection to the key-value server.
#[derive(Debug)]
pub struct KvsClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    job: String,
}

fn lost(e: impl std::fmt::Display) -> String {
    format!("the launcher's key-value server: {e}")
}

impl KvsClient {
    /// Connects and authenticates.
    pub fn connect(launch: &Launch) -> Result<KvsClient> {
        let stream =
            TcpStream::connect_timeout(&launch.kvs, Duration::from_secs(10)).map_err(|e| {
                Error::Bootstrap(format!("cannot reach the launcher at {}: {e}", launch.kvs))
            })?;
        stream.set_nodelay(true).ok();
        let writer = stream.try_clone().map_err(|e| Error::Bootstrap(lost(e)))?;
        let mut client =
            KvsClient { reader: BufReader::new(stream), writer, job: launch.job.clone() };
        let answer = client
            .request(&format!("HELLO {} {}", launch.secret, launch.rank))
            .map_err(Error::Bootstrap)?;
        if answer != "OK" {
            return Err(Error::Bootstrap(format!("the launcher refused this rank: {answer}")));
        }
        Ok(client)
    }

    /// This end's address of the connection to the launcher: an address of
    /// this host from which the launcher's host is reachable.
    pub fn local_ip(&self) -> Option<std::net::IpAddr> {
        self.writer.local_addr().ok().map(|a| a.ip())
    }

    /// Keeps the connection open for the rest of the process's life and
    /// ends the process when it closes: the launcher is gone (killed, its
    /// host lost, interrupted), and a rank it started on another host must
    /// not run on as an orphan. The server sends nothing unasked, so any
    /// end of the connection means that.
    pub fn watch_launcher(mut self) -> Result<()> {
        std::thread::Builder::new()
            .name("hpcomm-launcher-watch".into())
            .spawn(move || {
                let mut rest = Vec::new();
                let _ = std::io::Read::read_to_end(&mut self.reader, &mut rest);
                eprintln!("hpcomm: the launcher is gone (its connection closed); ending this rank");
                std::process::exit(1);
            })
            .map(drop)
            .map_err(|e| Error::Bootstrap(format!("cannot watch the launcher: {e}")))
    }

    fn request(&mut self, line: &str) -> std::result::Result<String, String> {
        self.writer.write_all(format!("{line}\n").as_bytes()).map_err(lost)?;
        let mut answer = String::new();
        if self.reader.read_line(&mut answer).map_err(lost)? == 0 {
            return Err(lost("connection closed"));
        }
        Ok(answer.trim_end().to_string())
    }
}

impl Exchange for KvsClient {
    fn job_id(&self) -> &str {
        &self.job
    }

    fn put(&mut self, key: &str, value: &[u8]) -> std::result::Result<(), String> {
        match self.request(&format!("PUT {key} {}", hex_encode(value)))?.as_str() {
            "OK" => Ok(()),
            other => Err(lost(format!("PUT {key}: {other}"))),
        }
    }

    fn get(&mut self, key: &str) -> std::result::Result<Vec<u8>, String> {
        let answer = self.request(&format!("GET {key}"))?;
        answer
            .strip_prefix("VAL ")
            .and_then(hex_decode)
            .ok_or_else(|| lost(format!("GET {key}: {answer}")))
    }

    fn fence(&mut self) -> std::result::Result<(), String> {
        match self.request("FENCE")?.as_str() {
            "OK" => Ok(()),
            other => Err(lost(format!("FENCE: {other}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips() {
        let bytes: Vec<u8> = (0..=255).collect();
        assert_eq!(hex_decode(&hex_encode(&bytes)), Some(bytes));
        assert_eq!(hex_decode("abc"), None);
        assert_eq!(hex_decode("zz"), None);
        assert_eq!(hex_decode(""), Some(vec![]));
    }
}
