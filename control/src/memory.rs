//! Memory use against the limit the process lives under: resident set size
//! from `/proc/self/statm`, the limit from cgroup v2 (`memory.max`), cgroup
//! v1 (`memory.limit_in_bytes`), or the configured value.

use std::path::Path;

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no memory effects.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    Some(pages * u64::try_from(page).ok()?)
}

/// The memory limit: `configured` when set (non-zero), else the cgroup's.
pub fn limit_bytes(configured: u64) -> Option<u64> {
    if configured > 0 {
        return Some(configured);
    }
    cgroup_limit(Path::new("/sys/fs/cgroup"))
}

/// Reads the cgroup limit under `root` (v2 first, then v1). "max" and the
/// v1 "unlimited" sentinel mean no limit.
pub fn cgroup_limit(root: &Path) -> Option<u64> {
    let v2 = std::fs::read_to_string(root.join("memory.max")).ok();
    let v1 = || std::fs::read_to_string(root.join("memory/memory.limit_in_bytes")).ok();
    let text = v2.or_else(v1)?;
    let v: u64 = text.trim().parse().ok()?;
    (v < (1 << 60)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_cgroup_v2_and_v1_limits() {
        let root = std::env::temp_dir().join(format!("ug-cgroup-{}", std::process::id()));
        std::fs::create_dir_all(root.join("memory")).unwrap();
        std::fs::write(
            root.join("memory/memory.limit_in_bytes"),
            "9223372036854771712\n",
        )
        .unwrap();
        assert_eq!(cgroup_limit(&root), None, "v1 unlimited");
        std::fs::write(root.join("memory/memory.limit_in_bytes"), "1073741824\n").unwrap();
        assert_eq!(cgroup_limit(&root), Some(1 << 30));
        std::fs::write(root.join("memory.max"), "max\n").unwrap();
        assert_eq!(cgroup_limit(&root), None, "v2 max");
        std::fs::write(root.join("memory.max"), "536870912\n").unwrap();
        assert_eq!(cgroup_limit(&root), Some(1 << 29));
        assert_eq!(limit_bytes(123), Some(123));
        assert!(rss_bytes().unwrap() > 0);
        let _ = std::fs::remove_dir_all(root);
    }
}
