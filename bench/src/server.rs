//! The server under test: started by the bench (`--spawn`) or given by address and pids,
//! and its cost read from `/proc` (RSS, CPU user+system, threads) and the kernel's
//! socket memory, sampled before and after a measurement.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::Serialize;

/// How to start the server.
#[derive(Clone, Debug)]
pub struct SpawnSpec {
    /// The `switchboard` binary.
    pub exe: PathBuf,
    /// 0: `switchboard serve` (all in one); N: one `switchboard router` and N
    /// `switchboard gateway` processes sharing the port (SO_REUSEPORT).
    pub gateways: u32,
    /// Gateway workers per process.
    pub workers: u32,
    /// Pin every server process to this CPU list (`taskset -c`).
    pub cpus: Option<String>,
    /// Extra TOML appended to the generated configuration.
    pub extra_toml: String,
    /// Keep the server's data here (accounts survive, so saved keys log in again);
    /// default: a temporary directory.
    pub data: Option<PathBuf>,
}

/// A server the bench talks to.
pub struct Server {
    pub addr: SocketAddr,
    pub fingerprint: String,
    pub sms_logs: Vec<PathBuf>,
    pub pids: Vec<u32>,
    children: Vec<Child>,
    _dir: Option<tempfile::TempDir>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for c in &mut self.children {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        }
        for c in &mut self.children {
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const CONFIG: &str = "\
[router]
pin_requests_per_source_hour = 100000000
pin_guesses_per_source_hour = 100000000
pin_requests_per_phone_hour = 1000
pending_registrations_max = 1000000
[limits]
login_timeout_ms = 600000
idle_timeout_ms = 3600000
[gateway]
accepts_per_sec = 1000000
[process]
tune_profile = \"\"
";

impl Server {
    /// A server that is already running.
    pub fn existing(
        addr: SocketAddr,
        fingerprint: String,
        sms_logs: Vec<PathBuf>,
        pids: Vec<u32>,
    ) -> Server {
        Server {
            addr,
            fingerprint,
            sms_logs,
            pids,
            children: Vec::new(),
            _dir: None,
        }
    }

    /// Starts the server in a fresh temporary data directory and waits until it listens.
    pub fn spawn(spec: &SpawnSpec) -> Result<Server, String> {
        if !spec.exe.exists() {
            return Err(format!(
                "{}: not found (build it: cargo build --release --bin switchboard, or pass --switchboard)",
                spec.exe.display()
            ));
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let cfg = dir.path().join("bench.toml");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let mut text = format!("workers = {}\nshards = 1\n{CONFIG}", spec.workers);
        let mut s = Server {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            fingerprint: String::new(),
            sms_logs: Vec::new(),
            pids: Vec::new(),
            children: Vec::new(),
            _dir: None,
        };
        if spec.gateways == 0 {
            let text = merge_toml(&text, &spec.extra_toml)?;
            std::fs::write(&cfg, &text).map_err(|e| e.to_string())?;
            let data = spec.data.clone().unwrap_or_else(|| dir.path().join("data"));
            let lines = s.start(
                spec,
                &["serve", "--listen", &s.addr.to_string()],
                &cfg,
                &data,
                "switchboard: listening on ",
            )?;
            s.fingerprint = fingerprint(&lines)?;
            s.sms_logs.push(data.join("sms.log"));
        } else {
            let link_port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map_err(|e| e.to_string())?
                .port();
            text += &format!(
                "[cluster]\nsecret = \"switchboard-bench-secret-0123456789\"\n[[cluster.router]]\nid = 1\naddress = \"127.0.0.1:{link_port}\"\npartitions = \"0-1023\"\n"
            );
            for g in 1..=spec.gateways {
                text += &format!("[[cluster.gateway]]\nid = {g}\nsource = \"127.0.0.1\"\n");
            }
            let text = merge_toml(&text, &spec.extra_toml)?;
            std::fs::write(&cfg, &text).map_err(|e| e.to_string())?;
            let root = spec
                .data
                .clone()
                .unwrap_or_else(|| dir.path().to_path_buf());
            let rdata = root.join("router");
            s.start(
                spec,
                &["router", "--id", "1"],
                &cfg,
                &rdata,
                "switchboard: router 1 listening",
            )?;
            s.sms_logs.push(rdata.join("sms.log"));
            let gdata = root.join("gateway");
            for g in 1..=spec.gateways {
                let lines = s.start(
                    spec,
                    &[
                        "gateway",
                        "--id",
                        &g.to_string(),
                        "--listen",
                        &s.addr.to_string(),
                    ],
                    &cfg,
                    &gdata,
                    &format!("switchboard: gateway {g} listening"),
                )?;
                if g == 1 {
                    s.fingerprint = fingerprint(&lines)?;
                }
            }
            s.sms_logs.push(gdata.join("sms.log"));
        }
        s._dir = Some(dir);
        Ok(s)
    }

    fn start(
        &mut self,
        spec: &SpawnSpec,
        args: &[&str],
        cfg: &Path,
        data: &Path,
        ready: &str,
    ) -> Result<Vec<String>, String> {
        let mut cmd = match &spec.cpus {
            Some(cpus) => {
                let mut c = Command::new("taskset");
                c.args(["-c", cpus]).arg(&spec.exe);
                c
            }
            None => Command::new(&spec.exe),
        };
        die_with_parent(&mut cmd);
        cmd.args(args)
            .arg("--config")
            .arg(cfg)
            .arg("--data")
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("{}: {e}", spec.exe.display()))?;
        let pid = child.id();
        let out = child.stdout.take().expect("piped");
        let err = child.stderr.take().expect("piped");
        self.children.push(child);
        self.pids.push(pid);
        let errors = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let e2 = errors.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                let mut e = e2.lock().expect("not poisoned");
                if e.len() < 20 {
                    e.push(l);
                }
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        let mut lines = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(l) => {
                    let done = l.starts_with(ready);
                    lines.push(l);
                    if done {
                        // Keep draining so the server never blocks on a full pipe.
                        std::thread::spawn(move || for _ in rx {});
                        return Ok(lines);
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
                Err(_) => {
                    std::thread::sleep(Duration::from_millis(100));
                    return Err(format!(
                        "`switchboard {}` did not start: {}",
                        args.join(" "),
                        errors.lock().expect("not poisoned").join(" | ")
                    ));
                }
            }
        }
    }
}

/// The bench's configuration with `--server-toml` laid over it, table by table (so
/// `[process]` there adds to the bench's own `[process]` instead of repeating it).
fn merge_toml(base: &str, extra: &str) -> Result<String, String> {
    fn merge(into: &mut toml::Table, from: toml::Table) {
        for (k, v) in from {
            match (into.get_mut(&k), v) {
                (Some(toml::Value::Table(a)), toml::Value::Table(b)) => merge(a, b),
                (_, v) => {
                    into.insert(k, v);
                }
            }
        }
    }
    let mut t: toml::Table = base.parse().map_err(|e| format!("bench config: {e}"))?;
    let e: toml::Table = extra.parse().map_err(|e| format!("--server-toml: {e}"))?;
    merge(&mut t, e);
    toml::to_string(&t).map_err(|e| e.to_string())
}

fn fingerprint(lines: &[String]) -> Result<String, String> {
    lines
        .iter()
        .find_map(|l| l.strip_prefix("switchboard: certificate sha256 fingerprint "))
        .map(str::to_string)
        .ok_or_else(|| format!("no certificate fingerprint in the banner: {lines:?}"))
}

/// One process's counters from `/proc`.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ProcSample {
    pub rss_bytes: u64,
    /// Anonymous resident memory (heap, stacks): RSS without the mapped log files,
    /// whose pages are the page cache's, not the connections'.
    pub rss_anon_bytes: u64,
    /// User + system CPU time.
    pub cpu_s: f64,
    pub threads: u64,
}

/// The server's processes and the kernel's socket memory at one moment.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Sample {
    pub procs: Vec<ProcSample>,
    /// `/proc/net/sockstat` TCP `mem` (pages × page size): socket buffers.
    pub tcp_buffer_bytes: u64,
    /// Slab caches of TCP sockets (`/proc/slabinfo`: TCP, request_sock_TCP,
    /// tcp_bind_bucket, sock_inode_cache), when readable.
    pub tcp_slab_bytes: Option<u64>,
}

impl Sample {
    pub fn rss(&self) -> u64 {
        self.procs.iter().map(|p| p.rss_bytes).sum()
    }
    pub fn rss_anon(&self) -> u64 {
        self.procs.iter().map(|p| p.rss_anon_bytes).sum()
    }
    pub fn cpu(&self) -> f64 {
        self.procs.iter().map(|p| p.cpu_s).sum()
    }
    pub fn threads(&self) -> u64 {
        self.procs.iter().map(|p| p.threads).sum()
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as u64
    } else {
        4096
    }
}

fn ticks_per_s() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if v > 0 {
        v as f64
    } else {
        100.0
    }
}

pub fn sample_proc(pid: u32) -> Result<ProcSample, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("/proc/{pid}/status: {e} (is the server running?)"))?;
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let rest = stat
        .rfind(')')
        .map(|i| &stat[i + 2..])
        .ok_or_else(|| format!("/proc/{pid}/stat: unexpected format"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ok(ProcSample {
        rss_bytes: field("VmRSS:") * 1024,
        rss_anon_bytes: field("RssAnon:") * 1024,
        cpu_s: (ticks(11) + ticks(12)) as f64 / ticks_per_s(),
        threads: field("Threads:"),
    })
}

pub fn sample(pids: &[u32]) -> Result<Sample, String> {
    let procs = pids
        .iter()
        .map(|p| sample_proc(*p))
        .collect::<Result<_, _>>()?;
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default();
    let tcp_pages = sockstat
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            w.iter()
                .position(|x| *x == "mem")
                .and_then(|i| w.get(i + 1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    Ok(Sample {
        procs,
        tcp_buffer_bytes: tcp_pages * page_size(),
        tcp_slab_bytes: slab_bytes(),
    })
}

fn slab_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/slabinfo").ok()?;
    let mut total = 0;
    for l in text.lines() {
        let w: Vec<&str> = l.split_whitespace().collect();
        if w.len() > 3
            && matches!(
                w[0],
                "TCP" | "request_sock_TCP" | "tcp_bind_bucket" | "sock_inode_cache"
            )
        {
            let objs: u64 = w[2].parse().ok()?;
            let size: u64 = w[3].parse().ok()?;
            total += objs * size;
        }
    }
    Some(total)
}

/// The machine, for the record.
#[derive(Clone, Debug, Serialize)]
pub struct Host {
    pub cpu_model: String,
    pub cores: usize,
    pub kernel: String,
    pub commit: String,
    pub date: String,
}

pub fn host() -> Host {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let run = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_else(|| "unknown".into())
    };
    Host {
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into()),
        // The machine's, not this process's share (the bench usually runs under taskset).
        cores: {
            // SAFETY: sysconf has no preconditions.
            let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
            if n > 0 {
                n as usize
            } else {
                1
            }
        },
        kernel: run("uname", &["-r"]),
        commit: std::env::var("SWITCHBOARD_COMMIT")
            .unwrap_or_else(|_| run("git", &["rev-parse", "--short", "HEAD"])),
        date: run("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]),
    }
}

/// Makes a process started by the bench end when the bench does, however it ends (killed
/// by a signal, the `Drop` that stops it never running): Linux's parent-death signal.
/// Without it, a bench stopped by `kill` left its server listening and its load running.
pub(crate) fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the bench exited while starting it"));
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
