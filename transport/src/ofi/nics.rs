//! Which NICs an endpoint uses: one rail (fabric, domain, endpoint) per
//! NIC, chosen by `HPCOMM_OFI_NICS` and by NUMA locality.
//!
//! libfabric lists one entry per NIC and provider (EFA: one `efa` domain per
//! device, `rdmap16s27-rdm`; tcp: one domain per interface, `eth0`). The
//! choice ([`select`]) works on names alone, so that it is tested over
//! entry lists as a p4d or p5 instance prints them; where each NIC and this
//! process sit ([`nic_node`], [`my_node`]) is read from sysfs.

use std::path::Path;

use super::choose::Candidate;

/// The most rails an endpoint opens (a p5 instance has 32 EFA devices).
pub const MAX_RAILS: usize = 32;

/// Which NICs to use (`HPCOMM_OFI_NICS`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Nics {
    /// For EFA one device near this process, the ranks taking the near
    /// devices in turn (rank mod their number), as MPI libraries place
    /// one process per NIC; for other providers the first entry's alone
    /// (a tcp host's interfaces seldom lead to the same peers).
    #[default]
    Default,
    /// Every NIC of the provider near this process (all when none is
    /// near, or where this process runs is unknown); never the loopback
    /// interface unless it is the first entry's.
    All,
    /// The first `n`, nearest first.
    Count(usize),
    /// These domains (`rdmap16s27-rdm`, `eth1`), in this order.
    Named(Vec<String>),
}

impl Nics {
    /// Parses `HPCOMM_OFI_NICS`: `all`, a count, or domain names separated
    /// by commas.
    pub fn parse(v: &str) -> Result<Nics, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(Nics::Default);
        }
        if v == "all" {
            return Ok(Nics::All);
        }
        if let Ok(n) = v.parse::<usize>() {
            return match n {
                1..=MAX_RAILS => Ok(Nics::Count(n)),
                _ => Err(format!("HPCOMM_OFI_NICS={n}: use 1 to {MAX_RAILS} NICs")),
            };
        }
        let names: Vec<String> = v.split(',').map(|s| s.trim().to_string()).collect();
        if names.iter().any(String::is_empty) || names.len() > MAX_RAILS {
            return Err(format!(
                "HPCOMM_OFI_NICS={v:?}: use all, a count, or up to {MAX_RAILS} domain names separated by commas (see `hpcomm info`)"
            ));
        }
        Ok(Nics::Named(names))
    }
}

/// The entries of `entries` to open a rail on each, rail 0 first: one per
/// NIC (domain) of the provider of `entries[first]` with its address
/// format (and, for EFA, its fabric), as `want` says, for rank `rank`.
/// `node` gives a NIC's NUMA node by domain name, `here` this process's;
/// without `HPCOMM_OFI_NICS` naming them, NICs on this process's node come
/// first, and `all` keeps only those when there are any.
pub(crate) fn select(
    entries: &[Candidate<'_>],
    first: usize,
    want: &Nics,
    node: &dyn Fn(&str) -> Option<u32>,
    here: Option<u32>,
    rank: usize,
) -> Result<Vec<usize>, String> {
    let chosen = entries[first];
    let alike = |c: &Candidate<'_>| {
        c.prov == chosen.prov
            && !c.is_efa_direct()
            && c.addr_format == chosen.addr_format
            && (chosen.prov != "efa" || c.fabric == chosen.fabric)
    };
    // One entry per domain, the chosen one for its own.
    let mut nics = vec![first];
    for (i, c) in entries.iter().enumerate() {
        if alike(c) && !nics.iter().any(|&n| entries[n].domain == c.domain) {
            nics.push(i);
        }
    }
    let near = |i: &usize| here.is_some() && node(entries[*i].domain) == here;
    let nearest_first = |mut nics: Vec<usize>| {
        // Stable: libfabric's order among equals.
        nics.sort_by_key(|i| !near(i));
        nics
    };
    let all = || {
        let nics: Vec<usize> = nics
            .iter()
            .copied()
            .filter(|&i| i == first || entries[i].domain != "lo")
            .take(MAX_RAILS)
            .collect();
        let local: Vec<usize> = nics.iter().copied().filter(near).collect();
        if local.is_empty() {
            nics
        } else {
            local
        }
    };
    Ok(match want {
        Nics::Default if chosen.prov == "efa" => {
            let near = all();
            vec![near[rank % near.len()]]
        }
        Nics::Default => vec![first],
        Nics::All => all(),
        Nics::Count(n) => {
            let mut picked = nearest_first(nics);
            picked.truncate(*n);
            picked
        }
        Nics::Named(names) => {
            let mut picked = Vec::with_capacity(names.len());
            for name in names {
                match nics.iter().find(|&&i| entries[i].domain == name.as_str()) {
                    Some(&i) if !picked.contains(&i) => picked.push(i),
                    Some(_) => return Err(format!("HPCOMM_OFI_NICS names {name} twice")),
                    None => {
                        let offered: Vec<&str> = nics.iter().map(|&i| entries[i].domain).collect();
                        return Err(format!(
                            "HPCOMM_OFI_NICS names {name}, which provider {} does not offer here (it offers {})",
                            chosen.prov,
                            offered.join(", ")
                        ));
                    }
                }
            }
            picked
        }
    })
}

/// The NUMA node of the NIC behind libfabric domain `domain`, from sysfs:
/// an EFA or verbs device (`rdmap16s27-rdm` is device `rdmap16s27`) or a
/// network interface (`eth0`); `None` when unknown.
pub fn nic_node(domain: &str) -> Option<u32> {
    let device = domain.strip_suffix("-rdm").or_else(|| domain.strip_suffix("-dgrm"));
    let device = device.unwrap_or(domain);
    if device.is_empty() || device.contains('/') || device.starts_with('.') {
        return None;
    }
    ["/sys/class/infiniband", "/sys/class/net"].iter().find_map(|class| {
        let text = std::fs::read_to_string(Path::new(class).join(device).join("device/numa_node"));
        text.ok()?.trim().parse::<i64>().ok().and_then(|n| u32::try_from(n).ok())
    })
}

/// The NUMA node this process runs on: the one node of every CPU it may
/// run on (its affinity), `None` when they span several or it is unknown.
pub fn my_node() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let list = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:"))?;
    let cpus = parse_cpu_list(list)?;
    let mut node = None;
    for cpu in cpus {
        let n = cpu_node(cpu)?;
        if node.is_some_and(|m| m != n) {
            return None;
        }
        node = Some(n);
    }
    node
}

/// The node of one CPU (`/sys/devices/system/cpu/cpuN/nodeM`).
fn cpu_node(cpu: u32) -> Option<u32> {
    let dir = std::fs::read_dir(format!("/sys/devices/system/cpu/cpu{cpu}")).ok()?;
    dir.filter_map(Result::ok)
        .find_map(|e| e.file_name().to_str()?.strip_prefix("node")?.parse().ok())
}

/// The CPUs of a list as the kernel prints it (`0-3,8,10-11`); `None` when
/// malformed or absurdly long.
pub(crate) fn parse_cpu_list(list: &str) -> Option<Vec<u32>> {
    let mut cpus = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => (lo.trim().parse::<u32>().ok()?, hi.trim().parse::<u32>().ok()?),
            None => {
                let cpu = part.trim().parse::<u32>().ok()?;
                (cpu, cpu)
            }
        };
        if hi < lo || (hi - lo) as usize + cpus.len() > 1 << 16 {
            return None;
        }
        cpus.extend(lo..=hi);
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    const IN: u32 = 2; // FI_SOCKADDR_IN
    const IN6: u32 = 3;
    const EFA: u32 = 0x13; // FI_ADDR_EFA

    fn c<'a>(prov: &'a str, fabric: &'a str, domain: &'a str, af: u32) -> Candidate<'a> {
        Candidate { prov, fabric, domain, addr_format: af }
    }

    /// A p4d.24xlarge with libfabric 2.1: four EFA devices, two per NUMA
    /// node, each listed under efa-direct first and then efa.
    fn p4d() -> Vec<Candidate<'static>> {
        let mut list = Vec::new();
        for fabric in ["efa-direct", "efa"] {
            for d in ["rdmap16s27-rdm", "rdmap32s27-rdm", "rdmap144s27-rdm", "rdmap160s27-rdm"] {
                list.push(c("efa", fabric, d, EFA));
            }
        }
        list.push(c("shm", "shm", "shm", 0));
        list.push(c("tcp;ofi_rxm", "172.31.0.0/20", "eth0", IN));
        list
    }

    fn p4d_node(domain: &str) -> Option<u32> {
        match domain {
            "rdmap16s27-rdm" | "rdmap32s27-rdm" => Some(0),
            "rdmap144s27-rdm" | "rdmap160s27-rdm" => Some(1),
            _ => None,
        }
    }

    fn domains<'a>(entries: &[Candidate<'a>], picked: &[usize]) -> Vec<&'a str> {
        picked.iter().map(|&i| entries[i].domain).collect()
    }

    #[test]
    fn efa_uses_the_devices_near_the_process() {
        let list = p4d();
        let first = 4; // what `pick` returns: the first of fabric efa
                       // By default one device per rank: the near ones in turn.
        let one = |here, rank| {
            let picked = select(&list, first, &Nics::Default, &p4d_node, here, rank).unwrap();
            domains(&list, &picked)
        };
        assert_eq!(one(Some(0), 0), ["rdmap16s27-rdm"]);
        assert_eq!(one(Some(0), 1), ["rdmap32s27-rdm"]);
        assert_eq!(one(Some(0), 2), ["rdmap16s27-rdm"]);
        assert_eq!(one(Some(1), 0), ["rdmap144s27-rdm"]);
        assert_eq!(one(Some(1), 7), ["rdmap160s27-rdm"]);
        // An unbound process: any of the four, never efa-direct's entries.
        assert_eq!(one(None, 6), ["rdmap144s27-rdm"]);
        // `all`: every device near.
        let on = |here| select(&list, first, &Nics::All, &p4d_node, here, 5).unwrap();
        assert_eq!(domains(&list, &on(Some(0))), ["rdmap16s27-rdm", "rdmap32s27-rdm"]);
        assert_eq!(domains(&list, &on(Some(1))), ["rdmap144s27-rdm", "rdmap160s27-rdm"]);
        assert_eq!(on(None), [4, 5, 6, 7]);
        // A count takes the nearest first.
        let three = select(&list, first, &Nics::Count(3), &p4d_node, Some(1), 0).unwrap();
        assert_eq!(
            domains(&list, &three),
            ["rdmap144s27-rdm", "rdmap160s27-rdm", "rdmap16s27-rdm"]
        );
    }

    #[test]
    fn named_nics_are_used_as_named() {
        let list = p4d();
        let want = Nics::Named(vec!["rdmap160s27-rdm".into(), "rdmap16s27-rdm".into()]);
        let picked = select(&list, 4, &want, &p4d_node, Some(0), 0).unwrap();
        assert_eq!(domains(&list, &picked), ["rdmap160s27-rdm", "rdmap16s27-rdm"]);
        let missing = select(&list, 4, &Nics::Named(vec!["eth0".into()]), &p4d_node, None, 0);
        let e = missing.unwrap_err();
        assert!(e.contains("eth0") && e.contains("rdmap16s27-rdm"), "{e}");
        let twice = Nics::Named(vec!["rdmap16s27-rdm".into(), "rdmap16s27-rdm".into()]);
        assert!(select(&list, 4, &twice, &p4d_node, None, 0).unwrap_err().contains("twice"));
    }

    #[test]
    fn tcp_uses_one_interface_unless_told() {
        // Two interfaces, each listed for IPv4 and IPv6, and loopback.
        let list = vec![
            c("tcp;ofi_rxm", "10.77.0.0/24", "eth0", IN),
            c("tcp;ofi_rxm", "fe80::/64", "eth0", IN6),
            c("tcp;ofi_rxm", "10.78.0.0/24", "eth1", IN),
            c("tcp;ofi_rxm", "fe80::/64", "eth1", IN6),
            c("tcp;ofi_rxm", "127.0.0.1/32", "lo", IN),
        ];
        let none = |_: &str| None;
        assert_eq!(select(&list, 0, &Nics::Default, &none, None, 0).unwrap(), [0]);
        // Both IPv4 interfaces, not loopback, not the IPv6 entries.
        assert_eq!(select(&list, 0, &Nics::All, &none, None, 0).unwrap(), [0, 2]);
        assert_eq!(select(&list, 0, &Nics::Count(8), &none, None, 0).unwrap(), [0, 2, 4]);
        // Loopback when it is what was chosen.
        assert_eq!(select(&list, 4, &Nics::All, &none, None, 0).unwrap(), [4, 0, 2]);
        let named = Nics::Named(vec!["eth1".into(), "eth0".into()]);
        assert_eq!(select(&list, 0, &named, &none, None, 0).unwrap(), [2, 0]);
    }

    #[test]
    fn the_variable_is_checked() {
        assert_eq!(Nics::parse("").unwrap(), Nics::Default);
        assert_eq!(Nics::parse(" all ").unwrap(), Nics::All);
        assert_eq!(Nics::parse("4").unwrap(), Nics::Count(4));
        assert_eq!(
            Nics::parse("eth0, eth1").unwrap(),
            Nics::Named(vec!["eth0".into(), "eth1".into()])
        );
        assert!(Nics::parse("0").is_err());
        assert!(Nics::parse("33").is_err());
        assert!(Nics::parse("eth0,,eth1").is_err());
    }

    #[test]
    fn cpu_lists_parse_as_the_kernel_prints_them() {
        assert_eq!(parse_cpu_list("0-3,8,10-11\n").unwrap(), [0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(parse_cpu_list("5").unwrap(), [5]);
        assert!(parse_cpu_list("3-1").is_none());
        assert!(parse_cpu_list("x").is_none());
        assert!(parse_cpu_list("0-4000000000").is_none());
        // This machine: its CPUs are on some node, or the answer is None;
        // either way no panic, and a node found is one sysfs lists.
        if let Some(n) = my_node() {
            assert!(Path::new(&format!("/sys/devices/system/node/node{n}")).exists());
        }
        assert_eq!(nic_node("../etc"), None);
    }
}
