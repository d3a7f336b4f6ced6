//! The protocol between `hpcomm run`'s key-value server and its clients —
//! the ranks, and under `hpcomm run --batch` the launchers of the other
//! nodes. The server (in the `hpcomm` command) and the client
//! ([`KvsClient`](super::kvs::KvsClient)) both speak it through this module.
//!
//! Text over TCP, one request and one answer per line; words are separated
//! by single spaces, and values travel hex-encoded (`-` for an empty one):
//!
//! | request | answer |
//! |---|---|
//! | `HELLO <secret> <rank>` (a rank's first line) | `OK`, or `ERR <reason>` and the connection closes |
//! | `HELLO <secret> node <index>` (a node launcher's first line) | `JOB <job> <ranks> <transport>` |
//! | `PUT <key> <hex>` | `OK` |
//! | `GET <key>` | `VAL <hex>`, once some rank has put `key` |
//! | `FENCE` | `OK`, once every rank has sent as many `FENCE`s (or `GATHER`s) |
//! | `GATHER <key> <hex>` | `ALL <hex of rank 0> … <hex of rank N-1>`: a fence whose answer is every rank's value |
//! | `ABORT <code> <hex message>` | none: the launcher ends the job with `code` |
//! | `EXIT <rank> <code>` (node launchers) | none: `rank` has ended with `code` (128 + signal if killed) |
//!
//! The server answers nothing unasked; a client that sees its connection
//! close knows the launcher is gone.

/// Keys are one word of at most this many bytes.
pub const MAX_KEY: usize = 256;
/// The longest line either side accepts, in bytes.
pub const MAX_LINE: usize = 1 << 20;

/// Who opens a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    /// A rank of the job.
    Rank(usize),
    /// The launcher of another node of an AWS Batch job, by node index.
    Node(usize),
}

/// A client's request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// The first line of every connection.
    Hello {
        /// The job's secret.
        secret: String,
        /// Who speaks.
        peer: Peer,
    },
    /// Publishes a value.
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Reads a value, waiting until it is there.
    Get {
        /// The key.
        key: String,
    },
    /// Waits for every rank.
    Fence,
    /// Publishes this rank's value under `key`, waits for every rank, and
    /// reads them all.
    Gather {
        /// The key.
        key: String,
        /// This rank's value.
        value: Vec<u8>,
    },
    /// Ends the job.
    Abort {
        /// The job's exit code.
        code: i32,
        /// Why.
        message: String,
    },
    /// A rank on another node has ended.
    Exit {
        /// The rank.
        rank: usize,
        /// Its exit code (128 + signal when killed).
        code: i32,
    },
}

/// The server's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Done.
    Ok,
    /// A value.
    Value(Vec<u8>),
    /// Every rank's value, in rank order.
    All(Vec<Vec<u8>>),
    /// What a node launcher needs: the job's id, size and transport.
    Job {
        /// The job's identifier.
        job: String,
        /// Ranks in the job.
        ranks: usize,
        /// The transport's name.
        transport: String,
    },
    /// A refusal or a failed request.
    Err(String),
}

/// Encodes bytes as lowercase hex.
pub fn hex_encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut text = String::with_capacity(2 * bytes.len());
    for b in bytes {
        text.push(DIGITS[usize::from(b >> 4)] as char);
        text.push(DIGITS[usize::from(b & 15)] as char);
    }
    text
}

/// Decodes lowercase or uppercase hex.
pub fn hex_decode(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn value_word(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "-".into()
    } else {
        hex_encode(bytes)
    }
}

fn parse_value(word: &str) -> Option<Vec<u8>> {
    if word == "-" {
        Some(Vec::new())
    } else if word.is_empty() {
        None
    } else {
        hex_decode(word)
    }
}

/// Whether `key` can travel as one word.
pub fn valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.len() <= MAX_KEY
        && key.bytes().all(|b| b.is_ascii_graphic() && b != b'\\')
}

fn key(word: &str) -> Result<String, &'static str> {
    if valid_key(word) {
        Ok(word.to_string())
    } else {
        Err("malformed key")
    }
}

impl Request {
    /// The request as a line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Request::Hello { secret, peer: Peer::Rank(r) } => format!("HELLO {secret} {r}"),
            Request::Hello { secret, peer: Peer::Node(n) } => format!("HELLO {secret} node {n}"),
            Request::Put { key, value } => format!("PUT {key} {}", value_word(value)),
            Request::Get { key } => format!("GET {key}"),
            Request::Fence => "FENCE".into(),
            Request::Gather { key, value } => format!("GATHER {key} {}", value_word(value)),
            Request::Abort { code, message } => {
                format!("ABORT {code} {}", value_word(message.as_bytes()))
            }
            Request::Exit { rank, code } => format!("EXIT {rank} {code}"),
        }
    }

    /// Parses a line (without its newline); the reason when it is not a
    /// request.
    pub fn parse(line: &str) -> Result<Request, &'static str> {
        let words: Vec<&str> = line.split(' ').collect();
        let number = |w: &str| w.parse::<usize>().map_err(|_| "malformed number");
        let code = |w: &str| w.parse::<i32>().map_err(|_| "malformed exit code");
        let value = |w: &str| parse_value(w).ok_or("value is not hex");
        Ok(match words.as_slice() {
            ["HELLO", secret, rank] => {
                Request::Hello { secret: secret.to_string(), peer: Peer::Rank(number(rank)?) }
            }
            ["HELLO", secret, "node", index] => {
                Request::Hello { secret: secret.to_string(), peer: Peer::Node(number(index)?) }
            }
            ["PUT", k, v] => Request::Put { key: key(k)?, value: value(v)? },
            ["GET", k] => Request::Get { key: key(k)? },
            ["FENCE"] => Request::Fence,
            ["GATHER", k, v] => Request::Gather { key: key(k)?, value: value(v)? },
            ["ABORT", c, m] => Request::Abort {
                code: code(c)?,
                message: String::from_utf8_lossy(&value(m)?).into_owned(),
            },
            ["EXIT", r, c] => Request::Exit { rank: number(r)?, code: code(c)? },
            _ => return Err("unknown request"),
        })
    }
}

impl Answer {
    /// The answer as a line, without its newline.
    pub fn line(&self) -> String {
        match self {
            Answer::Ok => "OK".into(),
            Answer::Value(v) => format!("VAL {}", value_word(v)),
            Answer::All(values) => {
                let mut line = String::from("ALL");
                for v in values {
                    line.push(' ');
                    line.push_str(&value_word(v));
                }
                line
            }
            Answer::Job { job, ranks, transport } => format!("JOB {job} {ranks} {transport}"),
            Answer::Err(why) => format!("ERR {why}"),
        }
    }

    /// Parses a line (without its newline).
    pub fn parse(line: &str) -> Result<Answer, String> {
        let malformed = || format!("malformed answer {:?}", truncated(line));
        let (head, rest) = line.split_once(' ').unwrap_or((line, ""));
        Ok(match head {
            "OK" if rest.is_empty() => Answer::Ok,
            "VAL" => Answer::Value(parse_value(rest).ok_or_else(malformed)?),
            "ALL" if rest.is_empty() => Answer::All(Vec::new()),
            "ALL" => Answer::All(
                rest.split(' ').map(parse_value).collect::<Option<_>>().ok_or_else(malformed)?,
            ),
            "JOB" => {
                let words: Vec<&str> = rest.split(' ').collect();
                let [job, ranks, transport] = words.as_slice() else {
                    return Err(malformed());
                };
                Answer::Job {
                    job: job.to_string(),
                    ranks: ranks.parse().map_err(|_| malformed())?,
                    transport: transport.to_string(),
                }
            }
            "ERR" => Answer::Err(rest.to_string()),
            _ => return Err(malformed()),
        })
    }
}

/// At most 80 characters of `line`, for error messages.
pub fn truncated(line: &str) -> &str {
    match line.char_indices().nth(80) {
        Some((i, _)) => &line[..i],
        None => line,
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

    #[test]
    fn requests_and_answers_round_trip() {
        let requests = [
            Request::Hello { secret: "s".into(), peer: Peer::Rank(3) },
            Request::Hello { secret: "s".into(), peer: Peer::Node(2) },
            Request::Put { key: "tcp-1".into(), value: vec![1, 2] },
            Request::Put { key: "k".into(), value: vec![] },
            Request::Get { key: "k".into() },
            Request::Fence,
            Request::Gather { key: "node".into(), value: b"n0".to_vec() },
            Request::Abort { code: 3, message: "out of memory".into() },
            Request::Exit { rank: 7, code: 137 },
        ];
        for r in requests {
            assert_eq!(Request::parse(&r.line()), Ok(r.clone()), "{}", r.line());
        }
        let answers = [
            Answer::Ok,
            Answer::Value(vec![0xff]),
            Answer::Value(vec![]),
            Answer::All(vec![vec![1], vec![], vec![2, 3]]),
            Answer::All(vec![]),
            Answer::Job { job: "ab12".into(), ranks: 8, transport: "auto".into() },
            Answer::Err("refused".into()),
        ];
        for a in answers {
            assert_eq!(Answer::parse(&a.line()), Ok(a.clone()), "{}", a.line());
        }
    }

    #[test]
    fn malformed_lines_are_refused() {
        for line in ["", "PUT k", "PUT k zz", "PUT  00", "GET", "HELLO s x", "EXIT 1", "FENCE x"] {
            assert!(Request::parse(line).is_err(), "{line:?}");
        }
        let long_key = format!("GET {}", "k".repeat(MAX_KEY + 1));
        assert!(Request::parse(&long_key).is_err());
        for line in ["", "VAL zz", "ALL 00 z", "JOB a b c", "WHAT"] {
            assert!(Answer::parse(line).is_err(), "{line:?}");
        }
    }
}
