//! Which libfabric entry the backend uses, and how it asks for one.
//!
//! The choice itself ([`pick`]) works on names alone, so that it is tested
//! over entry lists as libfabric releases print them — also EFA's, which
//! no machine of ours has.

use std::ffi::c_int;

use super::api::{self, Api, Info};
use super::nics;
use super::sys::*;
use super::{OfiConfig, ProviderInfo, EFA_MR_MODE, SUPPORTED_MR_MODE};
use crate::TransportError;

/// What the choice looks at in one `fi_info` entry.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Candidate<'a> {
    /// The provider's name (`efa`, `tcp;ofi_rxm`, `shm`).
    pub prov: &'a str,
    /// Its fabric's name (`efa`, `efa-direct`, `127.0.0.1/32`).
    pub fabric: &'a str,
    /// Its domain's name: one per NIC (`rdmap16s27-rdm`, `eth0`).
    pub domain: &'a str,
    /// Its address format (`FI_SOCKADDR_IN`, `FI_ADDR_EFA`).
    pub addr_format: u32,
}

impl Candidate<'_> {
    /// EFA's "direct" fabric (libfabric 2.1 and later list it before
    /// `efa`, under the same provider name): it carries no message larger
    /// than the device's MTU and emulates nothing, and our frames are
    /// larger, so it is never chosen.
    pub(crate) fn is_efa_direct(&self) -> bool {
        self.prov == "efa" && self.fabric == "efa-direct"
    }
}

/// The entry to use among `entries` (libfabric's order of preference):
/// the first of the requested provider, else the first of `efa`, else the
/// first that can leave the host (not `shm`) — never EFA's direct fabric.
pub(crate) fn pick(entries: &[Candidate<'_>], requested: Option<&str>) -> Option<usize> {
    let usable = |c: &Candidate<'_>| !c.is_efa_direct();
    let find =
        |ok: &dyn Fn(&Candidate<'_>) -> bool| entries.iter().position(|c| usable(c) && ok(c));
    match requested {
        Some(want) => find(&|c| c.prov == want),
        None => find(&|c| c.prov == "efa").or_else(|| find(&|c| !c.prov.starts_with("shm"))),
    }
}

/// The one-sided capabilities asked for with `rma`: reads and writes, ours
/// and peers' (every provider with `FI_RMA` here offers both).
const RMA_CAPS: u64 = (FI_RMA | FI_READ | FI_WRITE | FI_REMOTE_READ | FI_REMOTE_WRITE) as u64;

/// The hints every query starts from: RDM, messages (and reads and writes
/// when `rma`), contexts we supply, the `mr_mode` bits we support.
pub(super) fn hints<'a>(
    api: &'a Api,
    provider: Option<&str>,
    rma: bool,
    mr_mode: u64,
) -> Result<Info<'a>, String> {
    let hints = api.alloc_info()?;
    let h = hints.first();
    // SAFETY: `h` and its attribute structures were allocated by
    // fi_allocinfo and are ours until the hints are freed; the provider
    // name is strdup'd, as fi_freeinfo frees it.
    unsafe {
        (*h).caps = FI_MSG as u64 | if rma { RMA_CAPS } else { 0 };
        (*h).mode = FI_CONTEXT | FI_CONTEXT2;
        (*(*h).ep_attr).type_ = FI_EP_RDM;
        (*(*h).domain_attr).mr_mode = mr_mode as c_int;
        (*(*h).domain_attr).av_type = FI_AV_TABLE;
        (*(*h).domain_attr).threading = FI_THREAD_DOMAIN;
        if let Some(name) = provider {
            (*(*h).fabric_attr).prov_name = api::strdup(name);
        }
    }
    Ok(hints)
}

/// Describes one `fi_info` entry.
///
/// # Safety
///
/// `e` must be a live entry of an `fi_info` list.
pub(super) unsafe fn describe(e: *const fi_info) -> ProviderInfo {
    // SAFETY: the caller's contract; the attribute pointers of a returned
    // entry are set.
    unsafe {
        ProviderInfo {
            name: api::c_str((*(*e).fabric_attr).prov_name),
            fabric: api::c_str((*(*e).fabric_attr).name),
            domain: api::c_str((*(*e).domain_attr).name),
            inject_size: (*(*e).tx_attr).inject_size,
            max_msg_size: (*(*e).ep_attr).max_msg_size,
            mr_mode: (*(*e).domain_attr).mr_mode as u64,
            rma: (*e).caps & FI_RMA as u64 != 0,
        }
    }
}

/// Describes the first entry of a list of ours.
pub(super) fn describe_first(info: &Info<'_>) -> ProviderInfo {
    // SAFETY: a list we hold has a live first entry until it is dropped.
    unsafe { describe(info.first()) }
}

/// Every RDM provider libfabric offers here, in its order of preference
/// (those with reads first).
pub(super) fn providers(api: &Api) -> Result<Vec<ProviderInfo>, String> {
    let mut found: Vec<ProviderInfo> = Vec::new();
    for rma in [true, false] {
        let hints = hints(api, None, rma, SUPPORTED_MR_MODE)?;
        if let Some(list) = api.getinfo(&hints)? {
            for e in list.entries() {
                // SAFETY: `e` is an entry of the live list.
                let p = unsafe { describe(e) };
                // One line per provider and domain (a tcp domain has a
                // fabric per address family), EFA's two fabrics apart.
                let direct = |i: &ProviderInfo| i.fabric == "efa-direct";
                if !found
                    .iter()
                    .any(|f| f.name == p.name && f.domain == p.domain && direct(f) == direct(&p))
                {
                    found.push(p);
                }
            }
        }
    }
    Ok(found)
}

/// The entries rank `rank` will use, each as a list of its own: one per
/// NIC, [`pick`]'s first unless [`nics::select`] prefers others (one rail
/// each); with reads if the provider offers them, else without.
pub(super) fn choose<'a>(
    api: &'a Api,
    config: &OfiConfig,
    rank: usize,
) -> Result<Vec<Info<'a>>, TransportError> {
    let setup = |e: String| TransportError::Setup(e);
    let env = std::env::var("FI_PROVIDER").ok().filter(|s| !s.is_empty());
    let requested = config.provider.clone().or(env);
    let mut skipped_direct = false;
    for rma in [true, false] {
        let mr_mode = if config.efa_mr_mode { EFA_MR_MODE } else { SUPPORTED_MR_MODE };
        let hints = hints(api, requested.as_deref(), rma, mr_mode).map_err(setup)?;
        let Some(list) = api.getinfo(&hints).map_err(setup)? else { continue };
        let entries = list.entries();
        // SAFETY: entries of the live list.
        let described: Vec<ProviderInfo> =
            entries.iter().map(|&e| unsafe { describe(e) }).collect();
        let candidates: Vec<Candidate<'_>> = described
            .iter()
            .zip(&entries)
            .map(|(d, &e)| Candidate {
                prov: &d.name,
                fabric: &d.fabric,
                domain: &d.domain,
                // SAFETY: `e` is an entry of the live list.
                addr_format: unsafe { (*e).addr_format },
            })
            .collect();
        skipped_direct |= candidates.iter().any(Candidate::is_efa_direct);
        if let Some(at) = pick(&candidates, requested.as_deref()) {
            // Where this process runs matters only when NICs are chosen by
            // locality: sysfs is read only then.
            let by_locality = match &config.nics {
                nics::Nics::Default => candidates[at].prov == "efa",
                nics::Nics::Named(_) => false,
                nics::Nics::All | nics::Nics::Count(_) => true,
            };
            let here = if by_locality { nics::my_node() } else { None };
            let node = &nics::nic_node;
            let rails =
                nics::select(&candidates, at, &config.nics, node, here, rank).map_err(setup)?;
            // SAFETY: every `entries[i]` is an entry of `list`.
            return rails.iter().map(|&i| unsafe { list.dup(entries[i]) }.map_err(setup)).collect();
        }
    }
    let direct = if skipped_direct {
        " (EFA's efa-direct fabric is not supported: its messages are limited to one MTU)"
    } else {
        ""
    };
    Err(TransportError::Setup(match requested {
        Some(p) => format!(
            "libfabric has no RDM provider {p:?} here{direct} (see `fi_info -l`, or `hpcomm info` for the usable ones)"
        ),
        None => format!("libfabric offers no RDM provider here{direct}"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list<'a>(names: &[(&'a str, &'a str)]) -> Vec<Candidate<'a>> {
        names
            .iter()
            .map(|&(prov, fabric)| Candidate { prov, fabric, domain: "d", addr_format: 0 })
            .collect()
    }

    /// libfabric 2.1 on an EFA instance lists efa-direct first; both its
    /// fabrics are provider `efa`.
    const EFA_2_1: &[(&str, &str)] = &[
        ("efa", "efa-direct"),
        ("efa", "efa-direct"),
        ("efa", "efa"),
        ("efa", "efa"),
        ("shm", "shm"),
        ("tcp;ofi_rxm", "172.31.0.0/20"),
    ];

    #[test]
    fn efa_direct_is_never_chosen() {
        let entries = list(EFA_2_1);
        assert_eq!(pick(&entries, None), Some(2));
        assert_eq!(pick(&entries, Some("efa")), Some(2), "FI_PROVIDER=efa lands on efa-direct");
        let only_direct = list(&[("efa", "efa-direct"), ("shm", "shm")]);
        assert_eq!(pick(&only_direct, Some("efa")), None);
        assert_eq!(pick(&only_direct, None), None, "shm cannot leave the host");
    }

    #[test]
    fn efa_is_preferred_then_the_first_that_leaves_the_host() {
        // libfabric 1.x on EFA: efa listed after shm.
        let entries = list(&[("shm", "shm"), ("tcp;ofi_rxm", "10.0.0.0/16"), ("efa", "efa")]);
        assert_eq!(pick(&entries, None), Some(2));
        // No EFA (this machine): tcp;ofi_rxm, not shm.
        let entries =
            list(&[("shm", "shm"), ("tcp;ofi_rxm", "127.0.0.0/8"), ("udp;ofi_rxd", "udp")]);
        assert_eq!(pick(&entries, None), Some(1));
        assert_eq!(pick(&entries, Some("shm")), Some(0), "asked for, shm is used");
        assert_eq!(pick(&entries, Some("udp;ofi_rxd")), Some(2));
        assert_eq!(pick(&entries, Some("verbs;ofi_rxm")), None);
        assert_eq!(pick(&[], None), None);
    }
}
