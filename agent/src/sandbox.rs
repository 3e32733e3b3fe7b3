//! Sandboxes for users' code: script-mode and built-in training, notebook kernels, model
//! servers and the installation of their requirements all run through [`Sandbox`].
//!
//! The mechanism is bubblewrap (`bwrap`, Debian's `bubblewrap`, the sandbox under
//! Flatpak), not a home-made one. Each sandbox gets:
//! - a filesystem of its own: the system (`/usr` and a few files of `/etc`) read-only,
//!   its Python read-only, its work directory read-write, a private `/tmp`, nothing
//!   else: no other job, kernel or instance, no agent state, no studio data directory;
//! - its own PID, IPC and UTS namespaces, so it cannot see or signal the agent, the
//!   server or anyone else's processes (nor read their `/proc/*/environ`); it dies with
//!   the agent (`--die-with-parent`), and whatever it daemonized dies with it;
//! - when the agent runs as root, a uid of its own (one per running sandbox, never the
//!   agent's or another sandbox's), no capabilities and `no_new_privs` (`setpriv`); as
//!   an ordinary user, a user namespace (it keeps the agent's uid outside, so the
//!   filesystem view is what separates it);
//! - only its assigned GPUs' device nodes in `/dev`;
//! - memory, CPU and process limits in a cgroup (v2, or v1's memory, cpu and pids
//!   controllers) when the agent runs as root.
//!
//! The process tree is: agent → `atelier-agent sandbox-enter` (joins the cgroup, starts
//! a session, execs) → `bwrap` → `setpriv` → the user's program. Entering the cgroup
//! before `bwrap` exists means nothing the sandbox forks can be outside it.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{bail, Context as _};

/// Uids handed to sandboxes (root agents) start here, one per running sandbox.
pub const DEFAULT_UID_BASE: u32 = 1_500_000_000;
/// How many sandbox uids an agent may use at once.
const UID_SLOTS: u32 = 65_536;
/// Processes (threads included) one sandbox may have.
const PIDS_MAX: u32 = 4096;
/// The PATH inside a sandbox.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// The files of `/etc` a sandbox sees: name resolution, certificates, locale and the
/// dynamic linker, not whatever an operator keeps there (environment files, keys).
const ETC: &[&str] = &[
    "/etc/alternatives",
    "/etc/ca-certificates",
    "/etc/debian_version",
    "/etc/fonts",
    "/etc/group",
    "/etc/host.conf",
    "/etc/hosts",
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/lsb-release",
    "/etc/mime.types",
    "/etc/nsswitch.conf",
    "/etc/os-release",
    "/etc/passwd",
    "/etc/pip.conf",
    "/etc/protocols",
    "/etc/resolv.conf",
    "/etc/services",
    "/etc/ssl",
];

/// Whether sandboxes may use the node's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Network {
    /// The node's network (so `pip install` works); the default.
    Host,
    /// None for training jobs: loopback only, inside the sandbox. Kernels, model
    /// servers and requirement installs keep the node's network (the agent and the
    /// server must reach them; installs must reach the package index).
    None,
}

/// The agent's sandbox settings, from its command line.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Run users' code without a sandbox (`--unsandboxed`).
    pub unsandboxed: bool,
    pub network: Network,
    pub uid_base: u32,
    /// The interpreter for script-mode jobs and environments (`--python`).
    pub python: String,
    /// The `atelier-agent` binary (sandbox-enter, built-in training and serving).
    pub agent_exe: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `--unsandboxed`: users' code runs as the agent does.
    Off,
    /// The agent is root: a uid per sandbox, cgroup limits.
    Root,
    /// An ordinary user: a user namespace, no cgroup limits.
    User,
}

/// How this agent contains users' code; made once at start by [`Sandbox::detect`].
#[derive(Debug)]
pub struct Sandbox {
    mode: Mode,
    bwrap: PathBuf,
    setpriv: PathBuf,
    /// The agent's own binary: `sandbox-enter`, and built-in training and serving run
    /// inside the sandbox from it.
    agent_exe: PathBuf,
    /// The interpreter, as an absolute path that works inside a sandbox (a pyenv shim
    /// would not), and the directories it needs besides `/usr`.
    python: PathBuf,
    python_roots: Vec<PathBuf>,
    network: Network,
    cgroups: Option<Cgroups>,
    gpu_minors: BTreeMap<u32, u32>,
    uid_base: u32,
    lock_dir: PathBuf,
}

/// What one sandbox may see and use.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Names its cgroup (`job-…`, `kernel-…`), for an operator reading the tree.
    pub name: String,
    /// Bound read-write (and, for a root agent, owned by the sandbox's uid).
    pub writable: Vec<PathBuf>,
    /// Bound read-only: Python environments.
    pub readable: Vec<PathBuf>,
    /// Files for this sandbox alone (a kernel's connection file): bound read-only and,
    /// for a root agent, owned by the sandbox's uid so that only it can read them.
    pub private_files: Vec<PathBuf>,
    /// The working directory inside.
    pub cwd: PathBuf,
    /// The NVML indices of its GPUs.
    pub gpus: Vec<u32>,
    /// Limits; 0 is none.
    pub memory_mb: u64,
    pub cpus: u32,
    /// Keeps the node's network even under `--sandbox-network none`.
    pub needs_network: bool,
}

impl Sandbox {
    /// Finds bubblewrap, the interpreter and the cgroup hierarchy, then proves that a
    /// sandbox starts; an agent that cannot contain users' code refuses to start
    /// unless told `--unsandboxed`.
    pub fn detect(settings: &Settings, gpu_minors: BTreeMap<u32, u32>) -> anyhow::Result<Sandbox> {
        let agent_exe = settings.agent_exe.clone();
        let (python, python_roots) = resolve_python(&settings.python)?;
        let root = nix::unistd::geteuid().is_root();
        let mode = match (settings.unsandboxed, root) {
            (true, _) => Mode::Off,
            (false, true) => Mode::Root,
            (false, false) => Mode::User,
        };
        let lock_dir = if Path::new("/run").is_dir() && root {
            PathBuf::from("/run/atelier-sandbox")
        } else {
            std::env::temp_dir().join(format!("atelier-sandbox-{}", nix::unistd::geteuid()))
        };
        let mut sandbox = Sandbox {
            mode,
            bwrap: PathBuf::from("bwrap"),
            setpriv: PathBuf::from("/usr/bin/setpriv"),
            agent_exe,
            python,
            python_roots,
            network: settings.network,
            cgroups: None,
            gpu_minors,
            uid_base: settings.uid_base,
            lock_dir,
        };
        if mode == Mode::Off {
            tracing::warn!("--unsandboxed: users' code runs as this agent, with its files and its node token in reach");
            return Ok(sandbox);
        }
        sandbox.bwrap = find_on_path("bwrap").context(
            "bubblewrap (bwrap) is not installed: install it (Debian: apt-get install bubblewrap), \
             or pass --unsandboxed to run users' code unconfined",
        )?;
        if mode == Mode::Root {
            sandbox.setpriv = find_on_path("setpriv")
                .filter(|p| p.starts_with("/usr") || p.starts_with("/bin"))
                .context("setpriv (util-linux) is not installed in /usr: it drops the sandbox to its own uid")?;
            sandbox.cgroups = Cgroups::detect();
            match &sandbox.cgroups {
                Some(cgroups) => cgroups.remove_stale(),
                None => {
                    tracing::warn!("no writable cgroup hierarchy: sandboxes run without memory, CPU and process limits")
                }
            }
        }
        std::fs::create_dir_all(&sandbox.lock_dir)
            .with_context(|| format!("creating {}", sandbox.lock_dir.display()))?;
        sandbox.self_test()?;
        Ok(sandbox)
    }

    /// An unsandboxed value for unit tests that never start a process.
    #[cfg(test)]
    pub(crate) fn off_for_tests() -> Sandbox {
        tests::sandbox(Mode::Off, Network::Host)
    }

    /// Whether users' code is contained.
    pub fn enabled(&self) -> bool {
        self.mode != Mode::Off
    }

    /// The interpreter to run inside sandboxes.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// The process group to send a signal meant for the program a sandbox runs, and
    /// its children: SIGTERM for a graceful stop, SIGINT for an interrupt. Not the
    /// group of `outer`, the process the agent spawned (bubblewrap): SIGTERM or SIGINT
    /// kill bubblewrap itself, which takes the sandbox down at once. bubblewrap runs
    /// the program as its init's child, in a session of its own (`--new-session`);
    /// SIGKILL for the whole sandbox still goes to `outer`'s group.
    pub fn program_group(&self, outer: i32) -> i32 {
        if self.mode == Mode::Off {
            return outer;
        }
        let child = |pid: i32| -> Option<i32> {
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).ok()?;
            children.split_whitespace().next()?.parse().ok()
        };
        // Until bubblewrap has started the program, only a hard stop is possible.
        child(outer).and_then(child).unwrap_or(outer)
    }

    /// How a sandboxed process ended, worded as `ExitStatus` words it: bubblewrap
    /// reports a program killed by signal N as exit code 128 + N.
    pub fn describe_exit(&self, status: &std::process::ExitStatus) -> String {
        match status.code() {
            Some(code) if self.mode != Mode::Off && (129..=192).contains(&code) => {
                let signal = code - 128;
                let name = nix::sys::signal::Signal::try_from(signal).map(|s| s.as_str()).unwrap_or("unknown");
                format!("signal: {signal} ({name})")
            }
            _ => status.to_string(),
        }
    }

    /// The agent's binary, as sandboxes see it.
    pub fn agent_exe(&self) -> &Path {
        &self.agent_exe
    }

    /// Gives a tree a sandbox wrote back to the agent's uid, before the agent trusts
    /// it (a shared environment) or writes beside what the sandbox left.
    pub fn reclaim(&self, path: &Path) -> anyhow::Result<()> {
        if self.mode == Mode::Root {
            chown_tree(path, 0).with_context(|| format!("taking back {}", path.display()))?;
        }
        Ok(())
    }

    /// One line for the node page: how users' code is contained here.
    pub fn describe(&self) -> String {
        let limits = match &self.cgroups {
            Some(Cgroups::V2 { .. }) => "cgroup v2 limits",
            Some(Cgroups::V1 { .. }) => "cgroup v1 limits",
            None => "no resource limits",
        };
        let network = match self.network {
            Network::Host => "node network",
            Network::None => "no network for jobs",
        };
        match self.mode {
            Mode::Off => "unsandboxed".into(),
            Mode::Root => format!("bubblewrap, a uid per sandbox, {limits}, {network}"),
            Mode::User => format!("bubblewrap in a user namespace (agent's uid), {limits}, {network}"),
        }
    }

    /// A command that runs `program args` in a sandbox made to `request`, and what
    /// must live as long as it runs. The command's environment holds only `PATH`,
    /// `HOME`, `TMPDIR` and `LANG`: the caller adds what the program needs. It runs in
    /// a session and process group of its own (do not set another).
    pub fn command(
        &self,
        request: &Request,
        program: impl AsRef<OsStr>,
        args: &[OsString],
    ) -> anyhow::Result<(tokio::process::Command, Guard)> {
        if self.mode == Mode::Off {
            let mut command = tokio::process::Command::new(program);
            command
                .args(args)
                .current_dir(&request.cwd)
                .env_remove("ATELIER_NODE_TOKEN")
                .env_remove("ATELIER_SERVER")
                .env_remove("ATELIER_WORK_DIR")
                .process_group(0)
                .kill_on_drop(true);
            return Ok((command, Guard::default()));
        }
        let mut guard = Guard { uid_lock: None, cgroup: None, memory_mb: request.memory_mb };
        let uid = if self.mode == Mode::Root {
            let (uid, lock) = self.lease_uid()?;
            guard.uid_lock = Some(lock);
            for path in &request.writable {
                chown_tree(path, uid).with_context(|| format!("handing {} to the sandbox", path.display()))?;
            }
            for path in &request.private_files {
                std::os::unix::fs::lchown(path, Some(uid), Some(uid))?;
            }
            Some(uid)
        } else {
            None
        };
        if let Some(cgroups) = &self.cgroups {
            guard.cgroup = Some(cgroups.create(&request.name, request.memory_mb, request.cpus)?);
        }
        let mut command = tokio::process::Command::new(&self.agent_exe);
        command.arg("sandbox-enter");
        if let Some(cgroup) = &guard.cgroup {
            for dir in &cgroup.dirs {
                command.arg("--cgroup").arg(dir);
            }
        }
        command.arg("--").arg(&self.bwrap).args(self.bwrap_args(request));
        if let Some(uid) = uid {
            command.arg(&self.setpriv).args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                "--inh-caps=-all".into(),
                "--bounding-set=-all".into(),
                "--no-new-privs".into(),
                "--".into(),
            ]);
        }
        command
            .arg(program)
            .args(args)
            .current_dir(&request.cwd)
            .env_clear()
            .env("PATH", PATH)
            .env("HOME", "/tmp")
            .env("TMPDIR", "/tmp")
            .env("LANG", "C.UTF-8")
            .envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(passes_through)))
            .kill_on_drop(true);
        Ok((command, guard))
    }

    fn bwrap_args(&self, request: &Request) -> Vec<OsString> {
        let mut args: Vec<OsString> = Vec::new();
        let mut push = |items: &[&OsStr]| args.extend(items.iter().map(|s| s.to_os_string()));
        push(&["--die-with-parent".as_ref(), "--unshare-pid".as_ref(), "--unshare-ipc".as_ref()]);
        push(&["--unshare-uts".as_ref(), "--unshare-cgroup-try".as_ref(), "--hostname".as_ref(), "sandbox".as_ref()]);
        // The program in a session and process group of its own (see `program_pid`);
        // no controlling terminal to push keystrokes into either.
        push(&["--new-session".as_ref()]);
        if self.mode == Mode::User {
            push(&["--unshare-user".as_ref(), "--disable-userns".as_ref(), "--cap-drop".as_ref(), "ALL".as_ref()]);
        }
        if self.network == Network::None && !request.needs_network {
            push(&["--unshare-net".as_ref()]);
        }
        push(&["--ro-bind".as_ref(), "/usr".as_ref(), "/usr".as_ref()]);
        for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
            match std::fs::read_link(top) {
                Ok(target) => push(&["--symlink".as_ref(), target.as_os_str(), top.as_ref()]),
                Err(_) if Path::new(top).is_dir() => push(&["--ro-bind".as_ref(), top.as_ref(), top.as_ref()]),
                Err(_) => {}
            }
        }
        // Directories bubblewrap makes itself are private (0700): readable ones here.
        push(&["--perms".as_ref(), "0755".as_ref(), "--dir".as_ref(), "/etc".as_ref()]);
        for file in ETC {
            push(&["--ro-bind-try".as_ref(), file.as_ref(), file.as_ref()]);
        }
        push(&["--ro-bind".as_ref(), "/sys".as_ref(), "/sys".as_ref()]);
        push(&["--proc".as_ref(), "/proc".as_ref(), "--dev".as_ref(), "/dev".as_ref()]);
        push(&["--perms".as_ref(), "1777".as_ref(), "--tmpfs".as_ref(), "/tmp".as_ref()]);
        push(&["--perms".as_ref(), "0755".as_ref(), "--tmpfs".as_ref(), "/run".as_ref()]);
        if !request.gpus.is_empty() {
            for shared in ["/dev/nvidiactl", "/dev/nvidia-uvm", "/dev/nvidia-uvm-tools", "/dev/nvidia-modeset"] {
                push(&["--dev-bind-try".as_ref(), shared.as_ref(), shared.as_ref()]);
            }
            for index in &request.gpus {
                let minor = self.gpu_minors.get(index).copied().unwrap_or(*index);
                let node = format!("/dev/nvidia{minor}");
                push(&["--dev-bind-try".as_ref(), node.as_ref(), node.as_ref()]);
            }
        }
        let mut readable: Vec<PathBuf> = self.python_roots.clone();
        readable.push(self.agent_exe.clone());
        for path in &request.readable {
            readable.extend(venv_home(path));
            readable.push(path.clone());
        }
        readable.extend(request.private_files.iter().cloned());
        readable.retain(|p| !p.starts_with("/usr"));
        readable.sort();
        readable.dedup();
        // bubblewrap makes the directories above a bind private (0700, root's): the
        // sandbox's uid could not reach its own work directory by its full path.
        let mut above: Vec<&Path> = readable
            .iter()
            .chain(&request.writable)
            .flat_map(|p| p.ancestors().skip(1))
            .filter(|a| !matches!(a.to_str(), Some("/" | "/tmp" | "/run" | "/usr" | "/sys" | "/proc" | "/dev")))
            .filter(|a| !a.starts_with("/usr"))
            .collect();
        above.sort();
        above.dedup();
        for dir in above {
            push(&["--perms".as_ref(), "0755".as_ref(), "--dir".as_ref(), dir.as_os_str()]);
        }
        for path in &readable {
            push(&["--ro-bind".as_ref(), path.as_os_str(), path.as_os_str()]);
        }
        for path in &request.writable {
            push(&["--bind".as_ref(), path.as_os_str(), path.as_os_str()]);
        }
        push(&["--chdir".as_ref(), request.cwd.as_os_str()]);
        push(&["--".as_ref()]);
        args
    }

    /// A uid no other running sandbox of any agent on this machine has: the lock on
    /// its file is held while the sandbox runs and let go even if the agent dies.
    fn lease_uid(&self) -> anyhow::Result<(u32, File)> {
        for slot in 0..UID_SLOTS {
            let uid = self.uid_base.saturating_add(slot);
            let path = self.lock_dir.join(format!("{uid}.lock"));
            let file = File::options().create(true).truncate(false).write(true).open(&path)?;
            if file.try_lock().is_ok() {
                return Ok((uid, file));
            }
        }
        bail!("all {UID_SLOTS} sandbox uids from {} are in use", self.uid_base)
    }

    /// Runs `true` in a sandbox; the error says what bubblewrap said.
    fn self_test(&self) -> anyhow::Result<()> {
        let dir = self.lock_dir.join(format!("self-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let request = Request {
            name: format!("self-test-{}", std::process::id()),
            writable: vec![dir.clone()],
            cwd: dir.clone(),
            memory_mb: 64,
            cpus: 1,
            ..Request::default()
        };
        let (command, guard) = self.command(&request, &self.python, &["-c".into(), "pass".into()])?;
        let mut command = command.into_std();
        let output = command.stdin(Stdio::null()).output();
        drop(guard);
        let _ = std::fs::remove_dir_all(&dir);
        match output {
            Ok(out) if out.status.success() => Ok(()),
            Ok(out) => bail!(
                "the sandbox does not work here ({}): {}\nfix that, or pass --unsandboxed to run users' code unconfined",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(err) => bail!("starting the sandbox failed: {err}"),
        }
    }
}

/// What a running sandbox holds: its uid's lock and its cgroup, both let go (the
/// cgroup emptied and removed) when dropped, after the process is gone.
#[derive(Debug, Default)]
pub struct Guard {
    uid_lock: Option<File>,
    cgroup: Option<Cgroup>,
    memory_mb: u64,
}

impl Guard {
    /// "exceeded its memory limit of N MB" if the kernel's OOM killer killed a process
    /// of this sandbox.
    pub fn memory_exceeded(&self) -> Option<String> {
        let cgroup = self.cgroup.as_ref()?;
        cgroup.oom_killed().then(|| format!("exceeded its memory limit of {} MB", self.memory_mb))
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(cgroup) = self.cgroup.take() {
            // Off the async runtime: removal waits for the killed processes to go.
            std::thread::spawn(move || cgroup.remove());
        }
        drop(self.uid_lock.take());
    }
}

/// Where the agent makes its sandboxes' cgroups.
#[derive(Debug, Clone)]
enum Cgroups {
    /// The unified hierarchy: `/sys/fs/cgroup/atelier`.
    V2 { parent: PathBuf },
    /// One `atelier` directory in each of the memory, cpu and pids hierarchies.
    V1 { memory: PathBuf, cpu: Option<PathBuf>, pids: Option<PathBuf> },
}

#[derive(Debug)]
struct Cgroup {
    v2: bool,
    dirs: Vec<PathBuf>,
}

impl Cgroups {
    fn detect() -> Option<Cgroups> {
        let base = Path::new("/sys/fs/cgroup");
        if base.join("cgroup.controllers").exists() {
            let parent = base.join("atelier");
            std::fs::create_dir_all(&parent).ok()?;
            // Controllers must be enabled in every ancestor's subtree_control.
            for dir in [base, parent.as_path()] {
                for controller in ["+memory", "+pids", "+cpu"] {
                    let _ = std::fs::write(dir.join("cgroup.subtree_control"), controller);
                }
            }
            let enabled = std::fs::read_to_string(parent.join("cgroup.subtree_control")).unwrap_or_default();
            return enabled.contains("memory").then_some(Cgroups::V2 { parent });
        }
        let make = |controller: &str| {
            let dir = base.join(controller).join("atelier");
            std::fs::create_dir_all(&dir).ok().map(|()| dir)
        };
        let memory = make("memory")?;
        Some(Cgroups::V1 { memory, cpu: make("cpu"), pids: make("pids") })
    }

    /// Removes the empty sandbox cgroups an agent killed without warning (SIGKILL, a
    /// crash) left behind. Only those older than a minute: another agent on the
    /// machine may have made one that its process is about to join. The kernel
    /// refuses to remove a cgroup that still holds a process, so a busy one stays.
    fn remove_stale(&self) {
        let parents: Vec<&PathBuf> = match self {
            Cgroups::V2 { parent } => vec![parent],
            Cgroups::V1 { memory, cpu, pids } => std::iter::once(memory).chain(cpu).chain(pids).collect(),
        };
        let minute_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        for parent in parents {
            let Ok(entries) = std::fs::read_dir(parent) else { continue };
            for entry in entries.flatten() {
                let old = entry.metadata().and_then(|m| m.modified()).is_ok_and(|t| t < minute_ago);
                if old && entry.file_type().is_ok_and(|t| t.is_dir()) {
                    let _ = std::fs::remove_dir(entry.path());
                }
            }
        }
    }

    fn create(&self, name: &str, memory_mb: u64, cpus: u32) -> anyhow::Result<Cgroup> {
        let leaf = format!("{name}-{}", uuid::Uuid::new_v4().simple());
        let memory = memory_mb.saturating_mul(1024 * 1024).to_string();
        let quota = (u64::from(cpus) * 100_000).to_string();
        let write = |dir: &Path, file: &str, value: &str| {
            std::fs::write(dir.join(file), value).with_context(|| format!("setting {}", dir.join(file).display()))
        };
        match self {
            Cgroups::V2 { parent } => {
                let dir = parent.join(leaf);
                std::fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
                if memory_mb > 0 {
                    write(&dir, "memory.max", &memory)?;
                    let _ = write(&dir, "memory.swap.max", "0");
                }
                if cpus > 0 {
                    let _ = write(&dir, "cpu.max", &format!("{quota} 100000"));
                }
                let _ = write(&dir, "pids.max", &PIDS_MAX.to_string());
                Ok(Cgroup { v2: true, dirs: vec![dir] })
            }
            Cgroups::V1 { memory: memory_root, cpu, pids } => {
                let mut dirs = Vec::new();
                let dir = memory_root.join(&leaf);
                std::fs::create_dir(&dir).with_context(|| format!("creating the cgroup {}", dir.display()))?;
                if memory_mb > 0 {
                    write(&dir, "memory.limit_in_bytes", &memory)?;
                    // Swap would let it go past the limit; where swap accounting exists.
                    let _ = write(&dir, "memory.memsw.limit_in_bytes", &memory);
                }
                dirs.push(dir);
                if let Some(cpu) = cpu {
                    let dir = cpu.join(&leaf);
                    if std::fs::create_dir(&dir).is_ok() {
                        if cpus > 0 {
                            let _ = write(&dir, "cpu.cfs_period_us", "100000");
                            let _ = write(&dir, "cpu.cfs_quota_us", &quota);
                        }
                        dirs.push(dir);
                    }
                }
                if let Some(pids) = pids {
                    let dir = pids.join(&leaf);
                    if std::fs::create_dir(&dir).is_ok() {
                        let _ = write(&dir, "pids.max", &PIDS_MAX.to_string());
                        dirs.push(dir);
                    }
                }
                Ok(Cgroup { v2: false, dirs })
            }
        }
    }
}

impl Cgroup {
    fn oom_killed(&self) -> bool {
        let Some(memory) = self.dirs.first() else { return false };
        let (file, key) = if self.v2 { ("memory.events", "oom_kill") } else { ("memory.oom_control", "oom_kill") };
        let text = std::fs::read_to_string(memory.join(file)).unwrap_or_default();
        text.lines()
            .filter_map(|l| l.split_once(' '))
            .any(|(k, v)| k == key && v.trim().parse::<u64>().is_ok_and(|n| n > 0))
    }

    /// Kills what is left in it, then removes it.
    fn remove(self) {
        for _ in 0..100 {
            let mut left = false;
            for dir in &self.dirs {
                let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    left = true;
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
                }
            }
            if !left && self.dirs.iter().all(|d| std::fs::remove_dir(d).is_ok() || !d.exists()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        tracing::warn!(cgroup = %self.dirs.first().map(|d| d.display().to_string()).unwrap_or_default(), "a sandbox's cgroup could not be removed");
    }
}

/// `atelier-agent sandbox-enter [--cgroup DIR]... -- PROGRAM ARGS...`: joins the
/// cgroups, starts a new session (no controlling terminal to push keystrokes into;
/// a process group the agent signals as a whole), then becomes `PROGRAM`.
pub fn enter(cgroups: &[PathBuf], program: &[OsString]) -> anyhow::Error {
    let pid = std::process::id().to_string();
    for dir in cgroups {
        if let Err(err) = std::fs::write(dir.join("cgroup.procs"), &pid) {
            return anyhow::anyhow!("joining the cgroup {}: {err}", dir.display());
        }
    }
    if let Err(err) = nix::unistd::setsid() {
        return anyhow::anyhow!("starting a session: {err}");
    }
    let Some((first, rest)) = program.split_first() else {
        return anyhow::anyhow!("sandbox-enter: no program");
    };
    use std::os::unix::process::CommandExt as _;
    let err = std::process::Command::new(first).args(rest).exec();
    anyhow::anyhow!("starting {}: {err}", first.to_string_lossy())
}

/// The agent's environment variables a sandbox inherits: how to reach package indexes
/// (proxies, pip's and uv's settings, certificates), locale and time zone, and where
/// CUDA's libraries are. Nothing else: the agent's own settings hold its node token.
fn passes_through(name: &str) -> bool {
    const NAMES: &[&str] = &[
        "http_proxy",
        "https_proxy",
        "no_proxy",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "NO_PROXY",
        "SSL_CERT_FILE",
        "SSL_CERT_DIR",
        "REQUESTS_CA_BUNDLE",
        "CURL_CA_BUNDLE",
        "LD_LIBRARY_PATH",
        "TZ",
        "LANG",
    ];
    NAMES.contains(&name) || name.starts_with("PIP_") || name.starts_with("UV_") || name.starts_with("LC_")
}

/// Hands a directory tree to `uid` (links themselves, never what they point to).
pub fn chown_tree(path: &Path, uid: u32) -> std::io::Result<()> {
    let mut stack = vec![path.to_path_buf()];
    while let Some(p) = stack.pop() {
        std::os::unix::fs::lchown(&p, Some(uid), Some(uid))?;
        let meta = std::fs::symlink_metadata(&p)?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                stack.push(entry?.path());
            }
        }
    }
    Ok(())
}

/// The absolute interpreter behind `python` (a shim on PATH becomes the real binary)
/// and the prefix it needs read-only when that is not under `/usr`.
fn resolve_python(python: &str) -> anyhow::Result<(PathBuf, Vec<PathBuf>)> {
    let out = std::process::Command::new(python)
        .args(["-c", "import sys; print(sys.executable); print(sys.base_prefix)"])
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {python} (--python)"))?;
    if !out.status.success() {
        bail!("{python} (--python) failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let executable = PathBuf::from(lines.next().unwrap_or_default().trim());
    let prefix = PathBuf::from(lines.next().unwrap_or_default().trim());
    if !executable.is_absolute() {
        bail!("{python} (--python) does not know its own path");
    }
    let roots = if prefix.starts_with("/usr") || !prefix.is_absolute() { Vec::new() } else { vec![prefix] };
    Ok((executable, roots))
}

/// The base installation a virtual environment's interpreter links to (`home` in its
/// `pyvenv.cfg`), when that is outside `/usr`.
fn venv_home(env: &Path) -> Option<PathBuf> {
    let cfg = std::fs::read_to_string(env.join("pyvenv.cfg")).ok()?;
    let home = cfg.lines().find_map(|l| l.split_once('=').filter(|(k, _)| k.trim() == "home"))?.1.trim();
    // `home` is the base interpreter's bin directory; its prefix holds the stdlib.
    let prefix = Path::new(home).parent()?.to_path_buf();
    (prefix.is_absolute() && !prefix.starts_with("/usr")).then_some(prefix)
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| PATH.into());
    std::env::split_paths(&path).map(|d| d.join(name)).find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn sandbox(mode: Mode, network: Network) -> Sandbox {
        Sandbox {
            mode,
            bwrap: "bwrap".into(),
            setpriv: "/usr/bin/setpriv".into(),
            agent_exe: "/opt/atelier/atelier-agent".into(),
            python: "/opt/py/bin/python3".into(),
            python_roots: vec!["/opt/py".into()],
            network,
            cgroups: None,
            gpu_minors: BTreeMap::from([(0, 3), (1, 1)]),
            uid_base: DEFAULT_UID_BASE,
            lock_dir: std::env::temp_dir(),
        }
    }

    fn args(s: &Sandbox, request: &Request) -> Vec<String> {
        s.bwrap_args(request).iter().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn only_the_assigned_gpus_device_nodes_are_bound() {
        let s = sandbox(Mode::Root, Network::Host);
        let request = Request { gpus: vec![0], cwd: "/w".into(), ..Request::default() };
        let a = args(&s, &request).join(" ");
        // NVML index 0 is /dev/nvidia3 on this node.
        assert!(a.contains("--dev-bind-try /dev/nvidia3 /dev/nvidia3"), "{a}");
        assert!(!a.contains("/dev/nvidia1 "), "{a}");
        assert!(a.contains("--dev-bind-try /dev/nvidiactl"), "{a}");
        let none = args(&s, &Request { cwd: "/w".into(), ..Request::default() }).join(" ");
        assert!(!none.contains("nvidia"), "{none}");
    }

    #[test]
    fn the_work_directory_is_the_only_writable_bind_and_tmp_is_private() {
        let s = sandbox(Mode::Root, Network::Host);
        let request = Request {
            writable: vec!["/tmp/agent/jobs/j1/job".into()],
            readable: vec!["/srv/venvs/abc".into()],
            cwd: "/tmp/agent/jobs/j1/job/code".into(),
            ..Request::default()
        };
        let a = args(&s, &request);
        let binds: Vec<&str> = a.windows(2).filter(|w| w[0] == "--bind").map(|w| w[1].as_str()).collect();
        assert_eq!(binds, ["/tmp/agent/jobs/j1/job"]);
        // The private /tmp is mounted before the work directory inside it.
        let tmpfs = a.iter().position(|x| x == "/tmp").unwrap_or(usize::MAX);
        let work = a.iter().position(|x| x == "/tmp/agent/jobs/j1/job").unwrap_or(0);
        assert!(tmpfs < work, "{a:?}");
        let joined = a.join(" ");
        assert!(joined.contains("--ro-bind /srv/venvs/abc /srv/venvs/abc"), "{joined}");
        assert!(joined.contains("--ro-bind /opt/py /opt/py"), "{joined}");
        assert!(!joined.contains("--ro-bind /etc /etc"), "only chosen files of /etc: {joined}");
        assert!(!joined.contains("--unshare-net"), "{joined}");
    }

    #[test]
    fn no_network_applies_to_jobs_not_to_what_must_be_reached() {
        let s = sandbox(Mode::Root, Network::None);
        let job = args(&s, &Request { cwd: "/w".into(), ..Request::default() });
        assert!(job.contains(&"--unshare-net".to_string()));
        let kernel = args(&s, &Request { cwd: "/w".into(), needs_network: true, ..Request::default() });
        assert!(!kernel.contains(&"--unshare-net".to_string()));
    }

    #[test]
    fn an_ordinary_user_gets_a_user_namespace_without_capabilities() {
        let s = sandbox(Mode::User, Network::Host);
        let a = args(&s, &Request { cwd: "/w".into(), ..Request::default() }).join(" ");
        assert!(a.contains("--unshare-user --disable-userns --cap-drop ALL"), "{a}");
        let root = args(&sandbox(Mode::Root, Network::Host), &Request { cwd: "/w".into(), ..Request::default() });
        assert!(!root.contains(&"--unshare-user".to_string()));
    }

    #[test]
    fn only_package_index_and_locale_settings_pass_into_a_sandbox() {
        for name in ["PIP_INDEX_URL", "https_proxy", "SSL_CERT_FILE", "LC_ALL", "LD_LIBRARY_PATH"] {
            assert!(passes_through(name), "{name}");
        }
        for name in ["ATELIER_NODE_TOKEN", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "ATELIER_ADMIN_PASSWORD", "HOME"] {
            assert!(!passes_through(name), "{name}");
        }
    }

    #[test]
    fn a_venv_outside_usr_brings_its_base_interpreter() {
        let dir = std::env::temp_dir().join(format!("venv-home-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("dir");
        std::fs::write(
            dir.join("pyvenv.cfg"),
            "home = /opt/pyenv/versions/3.11.7/bin\ninclude-system-site-packages = false\n",
        )
        .expect("cfg");
        assert_eq!(venv_home(&dir), Some(PathBuf::from("/opt/pyenv/versions/3.11.7")));
        std::fs::write(dir.join("pyvenv.cfg"), "home = /usr/bin\n").expect("cfg");
        assert_eq!(venv_home(&dir), None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
