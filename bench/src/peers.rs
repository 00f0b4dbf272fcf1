//! The peers a comparison runs beside ultragate, started in one place:
//! each from Debian's package (installed when missing), pinned to its
//! core with `taskset`, its config written into the run's directory, its
//! output in a log there, stopped by PID when its handle drops.

use anyhow::{bail, Context};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A server this run started; killed on drop.
pub(crate) struct Server {
    pub(crate) name: &'static str,
    pub(crate) child: Child,
}

impl Drop for Server {
    /// SIGTERM first, so that nginx and Varnish stop their worker
    /// processes too (a SIGKILL would orphan them, still holding the
    /// ports); SIGKILL after two seconds.
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's pid has no memory effects.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Total CPU time (user + system) of a process and its descendants, in
/// clock ticks.
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let mut total = 0;
    let mut stack = vec![pid];
    while let Some(p) = stack.pop() {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
            let fields: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            total += fields
                .get(11)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            total += fields
                .get(12)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        if let Ok(children) = std::fs::read_to_string(format!("/proc/{p}/task/{p}/children")) {
            stack.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
    }
    total
}

pub(crate) fn ensure_packages() -> anyhow::Result<()> {
    let missing: Vec<&str> = [
        ("nginx", "nginx-light"),
        ("haproxy", "haproxy"),
        ("varnishd", "varnish"),
    ]
    .iter()
    .filter(|(bin, _)| {
        !Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
    .map(|(_, pkg)| *pkg)
    .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {missing:?}");
    let ok = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()?
        .success()
        && Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?
            .success();
    if !ok {
        bail!("cannot install {missing:?}");
    }
    Ok(())
}

pub(crate) fn spawn(
    name: &'static str,
    core: usize,
    cmd: &[&str],
    log: &Path,
) -> anyhow::Result<Server> {
    let out = std::fs::File::create(log)?;
    let child = Command::new("taskset")
        .arg("-c")
        .arg(core.to_string())
        .args(cmd)
        .stdout(out.try_clone()?)
        .stderr(out)
        .env("ULTRAGATE_LOG", "warn")
        .spawn()
        .with_context(|| format!("cannot start {name}"))?;
    Ok(Server { name, child })
}

pub(crate) fn wait_port(port: u16, name: &str) -> anyhow::Result<()> {
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("{name} did not listen on port {port}")
}

/// Writes `conf` as `work/FILE` and returns its path as text.
fn write_conf(work: &Path, file: &str, conf: &str) -> anyhow::Result<String> {
    let path = work.join(file);
    std::fs::write(&path, conf)?;
    Ok(path.display().to_string())
}

/// `bench origin` (this binary) on `port`, pinned to `core`.
pub(crate) fn origin(core: usize, port: u16, work: &Path) -> anyhow::Result<Server> {
    let me = std::env::current_exe()?;
    let listen = format!("127.0.0.1:{port}");
    let server = spawn(
        "origin",
        core,
        &[
            me.to_str().unwrap_or("bench"),
            "origin",
            "--listen",
            &listen,
        ],
        &work.join("origin.log"),
    )?;
    wait_port(port, "origin")?;
    Ok(server)
}

/// An ultragate binary `bin` with the config text `conf`, as `name`.
pub(crate) fn ultragate(
    name: &'static str,
    bin: &Path,
    core: usize,
    conf: &str,
    work: &Path,
) -> anyhow::Result<Server> {
    let conf = write_conf(work, &format!("{name}.toml"), conf)?;
    let bin = bin.to_str().unwrap_or("ultragate");
    spawn(
        name,
        core,
        &[bin, "--config", &conf],
        &work.join(format!("{name}.log")),
    )
}

/// nginx with the config text `conf`, as `name`.
pub(crate) fn nginx(
    name: &'static str,
    core: usize,
    conf: &str,
    work: &Path,
) -> anyhow::Result<Server> {
    let conf = write_conf(work, "nginx.conf", conf)?;
    spawn(name, core, &["nginx", "-c", &conf], &work.join("nginx.log"))
}

/// HAProxy with the config text `cfg`.
pub(crate) fn haproxy(core: usize, cfg: &str, work: &Path) -> anyhow::Result<Server> {
    let cfg = write_conf(work, "haproxy.cfg", cfg)?;
    spawn(
        "haproxy",
        core,
        &["haproxy", "-db", "-f", &cfg],
        &work.join("haproxy.log"),
    )
}

/// Varnish on `port` in front of `backend`, one thread pool, 256 MiB.
pub(crate) fn varnish(core: usize, port: u16, backend: u16, work: &Path) -> anyhow::Result<Server> {
    let dir = work.join("varnish").display().to_string();
    let (listen, backend) = (format!("127.0.0.1:{port}"), format!("127.0.0.1:{backend}"));
    spawn(
        "varnish",
        core,
        &[
            "varnishd",
            "-F",
            "-n",
            &dir,
            "-a",
            &listen,
            "-b",
            &backend,
            "-s",
            "malloc,256m",
            "-p",
            "thread_pools=1",
            "-p",
            "thread_pool_min=10",
        ],
        &work.join("varnish.log"),
    )
}
