//! The CPUs the container gives this process, not the node's: the
//! affinity mask (the cpuset the kubelet's CPU manager, `taskset` or
//! systemd sets) and the cgroup CPU quota (`cpu.max` in cgroup v2,
//! `cpu.cfs_quota_us` / `cpu.cfs_period_us` in v1, the smallest along the
//! cgroup's ancestors). A pod with `cpu: 2` on a 64-core node without the
//! static CPU manager has all 64 CPUs in its mask and a quota of 2: it
//! gets two data threads, not 63 throttled ones.

use std::path::Path;

/// What the process may use, as found at start.
#[derive(Debug, Clone, PartialEq)]
pub struct CpuBudget {
    /// The CPU ids of the affinity mask, ascending.
    pub affinity: Vec<usize>,
    /// The CPU quota in CPUs (e.g. 1.5), when one is set.
    pub quota: Option<f64>,
}

impl CpuBudget {
    /// The budget of this process: its affinity mask and its cgroup's
    /// quota under `/sys/fs/cgroup`.
    pub fn detect() -> CpuBudget {
        let affinity = core_affinity::get_core_ids()
            .map(|ids| ids.into_iter().map(|c| c.id).collect::<Vec<_>>())
            .filter(|ids| !ids.is_empty())
            .unwrap_or_else(|| vec![0]);
        let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        CpuBudget {
            affinity,
            quota: quota(&proc_cgroup, Path::new("/sys/fs/cgroup")),
        }
    }

    /// How many data threads the quota pays for: its whole CPUs (at least
    /// one), or no limit without a quota.
    pub fn whole_cpus(&self) -> Option<usize> {
        self.quota.map(|q| (q.floor() as usize).max(1))
    }

    /// The default data cores: the affinity mask without its first CPU
    /// (left to the control plane and the kernel) when it has more than
    /// one, cut to the quota's whole CPUs.
    pub fn default_cores(&self) -> Vec<usize> {
        let mut cores = match self.affinity.len() {
            0 => vec![0],
            1 => self.affinity.clone(),
            _ => self.affinity[1..].to_vec(),
        };
        if let Some(n) = self.whole_cpus() {
            cores.truncate(n);
        }
        cores
    }

    /// One line for the log and `/health`: where the choice came from.
    pub fn describe(&self) -> String {
        match self.quota {
            Some(q) => format!("affinity {:?}, cgroup quota {q:.2} CPUs", self.affinity),
            None => format!("affinity {:?}, no cgroup CPU quota", self.affinity),
        }
    }
}

/// The smallest CPU quota on the way from the process's cgroup (as
/// `/proc/self/cgroup` names it) up to the root, read under `root`.
pub fn quota(proc_cgroup: &str, root: &Path) -> Option<f64> {
    let mut found: Option<f64> = None;
    let mut keep = |q: Option<f64>| {
        if let Some(q) = q {
            found = Some(found.map_or(q, |f| f.min(q)));
        }
    };
    for line in proc_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        if controllers.is_empty() {
            // cgroup v2: files right under the unified root.
            for dir in ancestors(root, path) {
                keep(v2_quota(&dir));
            }
        } else if controllers.split(',').any(|c| c == "cpu") {
            // cgroup v1: the cpu hierarchy, mounted as `cpu` or
            // `cpu,cpuacct`.
            for mount in [controllers, "cpu", "cpu,cpuacct"] {
                let base = root.join(mount);
                if base.is_dir() {
                    for dir in ancestors(&base, path) {
                        keep(v1_quota(&dir));
                    }
                    break;
                }
            }
        }
    }
    found
}

/// `base/path`, then each parent up to `base`.
fn ancestors(base: &Path, path: &str) -> Vec<std::path::PathBuf> {
    let mut dirs = vec![base.to_path_buf()];
    let mut dir = base.to_path_buf();
    for part in path.split('/').filter(|p| !p.is_empty() && *p != "..") {
        dir = dir.join(part);
        dirs.push(dir.clone());
    }
    dirs
}

/// `cpu.max`: `max PERIOD` (no quota) or `QUOTA PERIOD`.
fn v2_quota(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut it = text.split_whitespace();
    let (q, p) = (it.next()?, it.next()?);
    ratio(q.parse().ok()?, p.parse().ok()?)
}

/// `cpu.cfs_quota_us` (-1: none) over `cpu.cfs_period_us`.
fn v1_quota(dir: &Path) -> Option<f64> {
    let read = |f: &str| -> Option<i64> {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    let q = read("cpu.cfs_quota_us")?;
    let p = read("cpu.cfs_period_us")?;
    ratio(u64::try_from(q).ok()?, u64::try_from(p).ok()?)
}

fn ratio(quota: u64, period: u64) -> Option<f64> {
    (quota > 0 && period > 0).then(|| quota as f64 / period as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(name: &str, files: &[(&str, &str)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!("ug-cpus-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        for (file, text) in files {
            let path = root.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        root
    }

    #[test]
    fn reads_the_v2_quota_along_the_ancestors() {
        let root = tree(
            "v2",
            &[
                ("cpu.max", "max 100000\n"),
                ("kubepods/cpu.max", "400000 100000\n"),
                ("kubepods/pod1/cpu.max", "150000 100000\n"),
                ("kubepods/pod1/ctr/cpu.max", "max 100000\n"),
            ],
        );
        assert_eq!(quota("0::/kubepods/pod1/ctr\n", &root), Some(1.5));
        assert_eq!(quota("0::/kubepods\n", &root), Some(4.0));
        assert_eq!(quota("0::/\n", &root), None, "max is no quota");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn reads_the_v1_quota_where_the_cpu_controller_is_mounted() {
        let root = tree(
            "v1",
            &[
                ("cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
                ("cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
                ("cpu,cpuacct/pod/cpu.cfs_quota_us", "200000\n"),
                ("cpu,cpuacct/pod/cpu.cfs_period_us", "100000\n"),
            ],
        );
        let cgroup = "4:memory:/pod\n3:cpu,cpuacct:/pod\n0::/\n";
        assert_eq!(quota(cgroup, &root), Some(2.0));
        assert_eq!(quota("3:cpu,cpuacct:/\n", &root), None, "-1 is no quota");
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn cores_follow_the_mask_and_the_quota() {
        let budget = |affinity: Vec<usize>, quota| CpuBudget { affinity, quota };
        assert_eq!(budget((0..64).collect(), Some(2.0)).default_cores(), [1, 2]);
        assert_eq!(budget((0..64).collect(), Some(0.5)).default_cores(), [1]);
        assert_eq!(budget(vec![0, 1], Some(1.0)).default_cores(), [1]);
        assert_eq!(budget(vec![1], None).default_cores(), [1]);
        assert_eq!(budget(vec![4, 5, 6], None).default_cores(), [5, 6]);
        assert_eq!(budget(vec![4, 5, 6], Some(8.0)).default_cores(), [5, 6]);
    }
}
