//! `PMI_process_mapping`: where a PMI launcher put every rank.
//!
//! The value is `(vector,(S,C,P),…)`: each block puts `P` consecutive ranks
//! on each of the `C` nodes from node `S` on; the blocks repeat, in order,
//! until every rank has a node. `(vector,(0,2,4))` is two nodes of four
//! ranks in blocks (ranks 0–3, 4–7); `(vector,(0,2,1))` is ranks dealt to
//! two nodes in turn.

/// Each rank's node index, for a job of `size` ranks. Refused when the value
/// is not a mapping or describes nothing.
pub fn nodes_of(mapping: &str, size: usize) -> Result<Vec<usize>, String> {
    let bad =
        || format!("malformed PMI_process_mapping {:?}", super::kvs_protocol::truncated(mapping));
    let compact: String = mapping.chars().filter(|c| !c.is_whitespace()).collect();
    let body =
        compact.strip_prefix("(vector,").and_then(|s| s.strip_suffix(')')).ok_or_else(bad)?;
    let mut blocks = Vec::new();
    for block in body.split("),") {
        let block = block.trim_start_matches('(').trim_end_matches(')');
        let numbers: Vec<usize> =
            block.split(',').map(|n| n.parse().map_err(|_| bad())).collect::<Result<_, _>>()?;
        let [start, count, per_node] = numbers[..] else {
            return Err(bad());
        };
        if count == 0 || per_node == 0 || start.checked_add(count).is_none() {
            return Err(bad());
        }
        blocks.push((start, count, per_node));
    }
    if blocks.is_empty() {
        return Err(bad());
    }
    let mut nodes = Vec::with_capacity(size);
    // Stops as soon as every rank has a node: a block may claim more nodes
    // than there are ranks (a launcher's value is not trusted to be small).
    'placing: while nodes.len() < size {
        for &(start, count, per_node) in &blocks {
            for node in start..start + count {
                let take = per_node.min(size - nodes.len());
                nodes.extend(std::iter::repeat_n(node, take));
                if nodes.len() == size {
                    break 'placing;
                }
            }
        }
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_cyclic_and_mixed_mappings() {
        assert_eq!(nodes_of("(vector,(0,2,4))", 8).unwrap(), [0, 0, 0, 0, 1, 1, 1, 1]);
        assert_eq!(nodes_of("(vector,(0,2,1))", 5).unwrap(), [0, 1, 0, 1, 0]);
        assert_eq!(nodes_of("(vector,(0,1,3),(1,1,1))", 4).unwrap(), [0, 0, 0, 1]);
        // Slurm's and Hydra's spellings, spaces and all; fewer ranks than
        // the blocks describe.
        assert_eq!(nodes_of(" (vector, (0,1,4))", 2).unwrap(), [0, 0]);
        assert_eq!(nodes_of("(vector,(0,1,1))", 0).unwrap(), Vec::<usize>::new());
        // Far more nodes than ranks: placed at once, not walked through.
        assert_eq!(nodes_of("(vector,(0,1000000000000000000,1))", 3).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn malformed_mappings_are_refused() {
        for bad in [
            "",
            "(vector)",
            "(vector,())",
            "(vector,(0,0,4))",
            "(vector,(0,2,0))",
            "(vector,(0,2))",
            "(list,(0,1,1))",
            "(vector,(a,1,1))",
            "(vector,(18446744073709551615,1,1))",
        ] {
            assert!(nodes_of(bad, 4).is_err(), "{bad:?}");
        }
    }
}
