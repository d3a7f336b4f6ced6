//! AWS Batch multi-node parallel jobs: what a node's container is told.
//!
//! Batch starts one container per node with the job definition's command,
//! `hpcomm run --batch -- PROGRAM`, and sets `AWS_BATCH_JOB_NODE_INDEX`,
//! `AWS_BATCH_JOB_NUM_NODES` and `AWS_BATCH_JOB_MAIN_NODE_INDEX` on every
//! node, and `AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS` on the others.
//! The main node's `hpcomm run` serves the job's key-value store; the
//! others connect to it. Their ranks then join through [`super::kvs`], as
//! under a plain `hpcomm run`.

use std::net::Ipv4Addr;

use super::vars::batch as var;
use crate::error::{Error, Result};

/// This node's place in a Batch job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BatchNode {
    /// This node's index.
    pub index: usize,
    /// Nodes in the job.
    pub nodes: usize,
    /// The main node's index.
    pub main: usize,
    /// The main node's address (known on the other nodes).
    pub main_address: Option<Ipv4Addr>,
}

impl BatchNode {
    /// Whether this is the main node.
    pub fn is_main(&self) -> bool {
        self.index == self.main
    }

    /// Reads the Batch variables through `lookup`: `None` outside Batch, an
    /// error when they are incomplete or inconsistent.
    pub fn from_lookup(lookup: &impl Fn(&str) -> Option<String>) -> Result<Option<BatchNode>> {
        let Some(index) = lookup(var::NODE_INDEX) else {
            return Ok(None);
        };
        let number = |name: &str, value: Option<String>| -> Result<usize> {
            let value = value.ok_or_else(|| {
                Error::Bootstrap(format!("{} is set but {name} is not", var::NODE_INDEX))
            })?;
            value
                .trim()
                .parse()
                .map_err(|_| Error::Bootstrap(format!("{name}={value:?} is not a number")))
        };
        let node = BatchNode {
            index: number(var::NODE_INDEX, Some(index))?,
            nodes: number(var::NUM_NODES, lookup(var::NUM_NODES))?,
            main: number(var::MAIN_NODE_INDEX, lookup(var::MAIN_NODE_INDEX))?,
            main_address: match lookup(var::MAIN_NODE_ADDRESS) {
                None => None,
                Some(a) => Some(a.trim().parse().map_err(|_| {
                    Error::Bootstrap(format!(
                        "{}={a:?} is not an IPv4 address",
                        var::MAIN_NODE_ADDRESS
                    ))
                })?),
            },
        };
        if node.index >= node.nodes || node.main >= node.nodes {
            return Err(Error::Bootstrap(format!(
                "AWS Batch node {} (main {}) of {} nodes: an index out of range",
                node.index, node.main, node.nodes
            )));
        }
        if !node.is_main() && node.main_address.is_none() {
            return Err(Error::Bootstrap(format!(
                "AWS Batch node {} is not the main node, but {} is not set",
                node.index,
                var::MAIN_NODE_ADDRESS
            )));
        }
        Ok(Some(node))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name: &str| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn batch_variables_are_read_and_checked() {
        assert_eq!(BatchNode::from_lookup(&env(&[])).unwrap(), None);
        let main = [
            ("AWS_BATCH_JOB_NODE_INDEX", "0"),
            ("AWS_BATCH_JOB_NUM_NODES", "3"),
            ("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0"),
        ];
        let node = BatchNode::from_lookup(&env(&main)).unwrap().unwrap();
        assert!(node.is_main());
        assert_eq!(node.nodes, 3);
        let child = [
            ("AWS_BATCH_JOB_NODE_INDEX", "2"),
            ("AWS_BATCH_JOB_NUM_NODES", "3"),
            ("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0"),
            ("AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS", "10.0.1.5"),
        ];
        let node = BatchNode::from_lookup(&env(&child)).unwrap().unwrap();
        assert_eq!(node.main_address, Some(Ipv4Addr::new(10, 0, 1, 5)));
        let no_address = &child[..3];
        let e = BatchNode::from_lookup(&|n: &str| {
            no_address.iter().find(|(k, _)| *k == n).map(|(_, v)| v.to_string())
        })
        .unwrap_err();
        assert!(e.to_string().contains("PRIVATE_IPV4_ADDRESS"), "{e}");
        let out_of_range = [
            ("AWS_BATCH_JOB_NODE_INDEX", "3"),
            ("AWS_BATCH_JOB_NUM_NODES", "3"),
            ("AWS_BATCH_JOB_MAIN_NODE_INDEX", "0"),
        ];
        assert!(BatchNode::from_lookup(&env(&out_of_range)).is_err());
        assert!(BatchNode::from_lookup(&env(&[("AWS_BATCH_JOB_NODE_INDEX", "x")])).is_err());
    }
}
