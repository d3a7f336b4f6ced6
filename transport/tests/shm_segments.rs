//! The shm segment's life in /dev/shm (alone in its test binary, so that no
//! other job of this process creates segments meanwhile).

use hpcomm_transport::shm::{Shm, ShmConfig};

#[test]
fn segments_are_unlinked_once_every_rank_has_attached() {
    let before = shm_files();
    let job = Shm::local_job(3, &ShmConfig::default()).expect("shm job");
    assert_eq!(shm_files(), before, "a segment is still linked in /dev/shm while the job runs");
    drop(job);
    assert_eq!(shm_files(), before);
}

fn shm_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
        })
        .unwrap_or_default();
    names.retain(|n| n.starts_with(&format!("hpcomm-local{}x", std::process::id())));
    names.sort();
    names
}
