//! Keeping a command's whole process tree tied to the command.
//!
//! `cancel` and the timeout signal the command's process group. A process
//! can leave that group: `setsid` puts a daemon in a session of its own,
//! and a double fork hands it to init. Such a daemon would outlive its
//! command, the command's cancel and timeout, and its client. Two
//! mechanisms bring every such process back:
//!
//! 1. **A cgroup v2 per command**, where skiffd may create cgroups. Each
//!    command is born in `skiffd-PID/cmd-N` under skiffd's own cgroup: the
//!    child moves itself there before `exec`, so nothing it starts can be
//!    born outside. When the command ends (its [`CommandCgroup`] is
//!    dropped), one write to `cgroup.kill` sends SIGKILL to everything in
//!    it, however it forked, and the empty cgroup is removed.
//! 2. **skiffd as child subreaper** (always on). An orphan is handed to
//!    skiffd instead of init. [`Containment::sweep`] reaps the zombies among
//!    these adopted processes and kills (with everything below it) every
//!    adopted process that no running command can own: one that started
//!    before every running command did, or while none ran. That rule never
//!    kills a process of a command that is still running, because a
//!    command's processes all start after its shell.
//!
//! ```text
//!   skiffd (subreaper) ─┬─ sh -c CMD        (cgroup skiffd-PID/cmd-7)
//!                       │    └─ ...
//!                       └─ sleep 1000       adopted: its parent is gone
//! ```
//!
//! Limits (also in docs/protocol.md): without cgroups, an orphan lives on
//! while any command that started before it is still running, and a
//! process that forks in the instant it is being stopped may survive until
//! the next sweep. A command running as root can leave its cgroup. None of
//! this holds after skiffd is killed with SIGKILL; the next start cleans
//! up the cgroups such a server left.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};

use crate::sys;

/// How often adopted processes are looked at while there may be some.
pub const SWEEP_EVERY: Duration = Duration::from_millis(200);
/// Most processes one sweep looks at or kills, so a fork bomb cannot
/// stall the loop; the rest wait for the next sweep.
const SWEEP_MAX: usize = 4096;
/// Set this variable to `off` in skiffd's environment to use only the
/// subreaper, even where cgroups work.
pub const CGROUPS_ENV: &str = "SKIFFD_CGROUPS";

/// What skiffd does to keep command trees contained.
pub struct Containment {
    /// `skiffd-PID` in the cgroup v2 tree, if skiffd may create cgroups.
    cgroups: Option<PathBuf>,
    /// Number for the next command's cgroup.
    next: u64,
    /// skiffd is the child subreaper.
    subreaper: bool,
    /// When the reactor's next sweep is due, if one is on its timers.
    pub sweep_due: Option<Instant>,
}

/// A running command, as the sweep needs to know it.
pub struct LiveCommand<'a> {
    /// Its shell's pid (reaped by its own `Child`, never by the sweep).
    pub pid: u32,
    /// When the shell started, in clock ticks since boot (`/proc` stat).
    pub started: u64,
    /// Its cgroup, if it has one.
    pub cgroup: Option<&'a CommandCgroup>,
}

/// What a sweep found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Adopted processes still alive and owned by a running command.
    pub kept: usize,
    /// Processes sent SIGKILL.
    pub killed: usize,
    /// Zombies reaped.
    pub reaped: usize,
    /// Ended commands' cgroups not yet removed.
    pub cgroups_left: usize,
}

impl Sweep {
    /// Whether another sweep soon has anything to do.
    pub fn more_to_do(&self) -> bool {
        self.kept + self.killed + self.cgroups_left > 0
    }
}

impl Containment {
    /// Becomes the child subreaper and finds out whether cgroups work.
    pub fn start() -> Containment {
        let subreaper = match sys::become_child_subreaper() {
            Ok(()) => true,
            Err(e) => {
                warn!("cannot become child subreaper ({e}): a command's orphans go to init");
                false
            }
        };
        let cgroups = if std::env::var(CGROUPS_ENV).is_ok_and(|v| v == "off") {
            info!("commands: no cgroups ({CGROUPS_ENV}=off); orphans are tracked as subreaper");
            None
        } else {
            match own_cgroup_dir().and_then(|dir| make_server_cgroup(&dir)) {
                Ok(dir) => {
                    info!("commands: one cgroup each, under {}", dir.display());
                    Some(dir)
                }
                Err(why) => {
                    info!("commands: no cgroups ({why}); orphans are tracked as subreaper");
                    None
                }
            }
        };
        Containment {
            cgroups,
            next: 0,
            subreaper,
            sweep_due: None,
        }
    }

    /// A fresh cgroup for a command about to start, if cgroups work here.
    pub fn cgroup_for_command(&mut self) -> Option<CommandCgroup> {
        let base = self.cgroups.as_ref()?;
        self.next += 1;
        let dir = base.join(format!("cmd-{}", self.next));
        let made = fs::create_dir(&dir).and_then(|()| {
            fs::OpenOptions::new()
                .write(true)
                .open(dir.join("cgroup.procs"))
        });
        match made {
            Ok(procs) => Some(CommandCgroup { dir, procs }),
            Err(e) => {
                warn!("cannot make cgroup {}: {e}", dir.display());
                let _ = fs::remove_dir(&dir);
                None
            }
        }
    }

    /// One look at the processes skiffd adopted, and at the cgroups of
    /// ended commands: reaps zombies, kills what no running command can
    /// own, removes empty cgroups. Bounded by [`SWEEP_MAX`]; never waits.
    pub fn sweep(&mut self, live: &[LiveCommand]) -> Sweep {
        let mut report = Sweep::default();
        if self.subreaper {
            let ours: Vec<u32> = live.iter().map(|c| c.pid).collect();
            let starts: Vec<u64> = live.iter().map(|c| c.started).collect();
            for pid in children_of(std::process::id()).into_iter().take(SWEEP_MAX) {
                if ours.contains(&pid) {
                    continue;
                }
                match proc_stat(pid) {
                    Some(stat) if stat.state == 'Z' => {
                        report.reaped += usize::from(sys::reap_if_exited(pid));
                    }
                    Some(stat) if may_belong_to_a_running_command(stat.started, &starts) => {
                        report.kept += 1;
                    }
                    // Gone already, or an orphan of ended commands.
                    Some(_) => {
                        report.killed += kill_tree(pid, SWEEP_MAX.saturating_sub(report.killed));
                    }
                    None => {
                        report.reaped += usize::from(sys::reap_if_exited(pid));
                    }
                }
            }
        }
        if let Some(base) = &self.cgroups {
            let live_dirs: Vec<&Path> = live
                .iter()
                .filter_map(|c| c.cgroup.map(|g| g.dir.as_path()))
                .collect();
            for dir in command_cgroups(base) {
                if !live_dirs.contains(&dir.as_path()) && !kill_and_remove(&dir) {
                    report.cgroups_left += 1;
                }
            }
        }
        report
    }
}

impl Drop for Containment {
    /// skiffd is exiting: nothing it started may stay behind.
    fn drop(&mut self) {
        if let Some(base) = &self.cgroups {
            let _ = write_kill(base);
            // The kill is asynchronous: give the cgroups a moment to empty.
            for _ in 0..20 {
                let left = command_cgroups(base)
                    .iter()
                    .filter(|d| fs::remove_dir(d).is_err())
                    .count();
                if left == 0 && fs::remove_dir(base).is_ok() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        if self.subreaper {
            for pid in children_of(std::process::id()).into_iter().take(SWEEP_MAX) {
                kill_tree(pid, SWEEP_MAX);
            }
        }
    }
}

/// One command's cgroup. Dropping it ends every process in it.
#[derive(Debug)]
pub struct CommandCgroup {
    /// Its directory in the cgroup tree.
    dir: PathBuf,
    /// Its `cgroup.procs`, open for the command to join before `exec`.
    procs: File,
}

impl CommandCgroup {
    /// `cgroup.procs`, for [`sys::join_cgroup_before_exec`].
    pub fn procs(&self) -> &File {
        &self.procs
    }
}

impl Drop for CommandCgroup {
    fn drop(&mut self) {
        // If it is not empty yet, the next sweep removes it.
        kill_and_remove(&self.dir);
    }
}

/// The rule for adopted processes: a process can belong to a running
/// command only if that command's shell started no later than it did.
/// (Start times are in clock ticks, so a tie keeps the process.)
fn may_belong_to_a_running_command(started: u64, running_starts: &[u64]) -> bool {
    running_starts.iter().any(|&s| s <= started)
}

/// Stops `root` and everything below it, top down (a stopped process
/// cannot fork), then kills them all. At most `limit` processes; returns
/// how many were signalled.
fn kill_tree(root: u32, limit: usize) -> usize {
    let mut stack = vec![root];
    let mut found = Vec::new();
    while let Some(pid) = stack.pop() {
        if found.len() >= limit {
            break;
        }
        if sys::kill_process(pid, libc::SIGSTOP).is_err() {
            continue; // already gone
        }
        found.push(pid);
        stack.extend(children_of(pid));
    }
    for &pid in &found {
        let _ = sys::kill_process(pid, libc::SIGKILL);
    }
    found.len()
}

/// Ends everything in a cgroup and tries to remove it; true if it is gone.
fn kill_and_remove(dir: &Path) -> bool {
    if fs::remove_dir(dir).is_ok() {
        return true;
    }
    let _ = write_kill(dir);
    fs::remove_dir(dir).is_ok() || !dir.exists()
}

fn write_kill(dir: &Path) -> std::io::Result<()> {
    fs::OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.kill"))?
        .write_all(b"1")
}

/// The `cmd-N` cgroups under `base`.
fn command_cgroups(base: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(base) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(OsStr::to_str)
                .is_some_and(|n| n.starts_with("cmd-"))
        })
        .collect()
}

/// The direct children of `pid`, from `/proc/PID/task/*/children` (a
/// child belongs to the thread that forked it, or that adopted it).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut kids = Vec::new();
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            kids.extend(
                text.split_whitespace()
                    .filter_map(|s| s.parse::<u32>().ok()),
            );
        }
    }
    kids
}

/// When process `pid` started, in clock ticks since boot.
pub fn start_ticks(pid: u32) -> Option<u64> {
    proc_stat(pid).map(|s| s.started)
}

/// The two fields of `/proc/PID/stat` the sweep needs.
#[derive(Debug, PartialEq, Eq)]
struct ProcStat {
    /// `R`, `S`, `Z` (zombie), ...
    state: char,
    /// Start time in clock ticks since boot.
    started: u64,
}

fn proc_stat(pid: u32) -> Option<ProcStat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Parses `/proc/PID/stat`. The command name (field 2) is in parentheses
/// and may itself hold spaces and `)`, so fields are counted from the
/// last `)`: state is field 3, the start time field 22.
fn parse_stat(text: &str) -> Option<ProcStat> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let started = fields.nth(22 - 4)?.parse().ok()?;
    Some(ProcStat { state, started })
}

/// skiffd's own directory in the cgroup v2 tree.
fn own_cgroup_dir() -> Result<PathBuf, String> {
    let cgroup = fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").map_err(|e| e.to_string())?;
    let path = unified_path(&cgroup).ok_or("not in a cgroup v2 hierarchy")?;
    let (root, mount) = cgroup2_mount(&mountinfo).ok_or("no cgroup2 file system is mounted")?;
    let below = Path::new(path)
        .strip_prefix(root)
        .map_err(|_| format!("our cgroup {path} is outside the mount of {root}"))?;
    Ok(Path::new(mount).join(below))
}

/// The v2 line of `/proc/self/cgroup` is `0::/PATH`.
fn unified_path(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|l| l.strip_prefix("0::"))
}

/// `(root, mount point)` of the first cgroup2 mount in `/proc/self/mountinfo`:
/// `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [TAGS...] - FSTYPE SOURCE ...`.
fn cgroup2_mount(mountinfo: &str) -> Option<(&str, &str)> {
    mountinfo.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        if right.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let mut f = left.split_whitespace();
        let root = f.nth(3)?;
        let mount = f.next()?;
        Some((root, mount))
    })
}

/// Makes `skiffd-PID` under `dir` and checks it can hold and kill
/// commands; first removes what crashed skiffds left there.
fn make_server_cgroup(dir: &Path) -> Result<PathBuf, String> {
    remove_stale_server_cgroups(dir);
    let base = dir.join(format!("skiffd-{}", std::process::id()));
    fs::create_dir(&base).map_err(|e| format!("cannot create {}: {e}", base.display()))?;
    let usable = base.join("cgroup.kill").exists()
        && fs::OpenOptions::new()
            .write(true)
            .open(base.join("cgroup.procs"))
            .is_ok();
    if !usable {
        let _ = fs::remove_dir(&base);
        return Err(format!(
            "{} has no writable cgroup.procs or no cgroup.kill (Linux 5.14+)",
            base.display()
        ));
    }
    Ok(base)
}

/// Kills and removes `skiffd-PID` cgroups whose process no longer exists.
fn remove_stale_server_cgroups(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e
            .file_name()
            .to_str()
            .and_then(|n| n.strip_prefix("skiffd-"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        // Whatever runs under that pid now (another skiffd, or a process
        // that reused the pid) may own it: only a vanished pid is stale.
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let base = e.path();
        let _ = write_kill(&base);
        for d in command_cgroups(&base) {
            let _ = fs::remove_dir(d);
        }
        if fs::remove_dir(&base).is_ok() {
            info!("removed {} left by a skiffd that is gone", base.display());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let text = "4242 (a) b (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100\n";
        assert_eq!(
            parse_stat(text),
            Some(ProcStat {
                state: 'S',
                started: 987654
            })
        );
        assert_eq!(parse_stat("12 (x) Z 1"), None);
        assert_eq!(parse_stat("no parenthesis"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn our_own_start_time_is_readable() {
        let me = start_ticks(std::process::id()).unwrap();
        assert!(me > 0);
    }

    #[test]
    fn an_orphan_is_kept_only_while_an_earlier_command_runs() {
        assert!(!may_belong_to_a_running_command(100, &[]));
        assert!(!may_belong_to_a_running_command(100, &[101, 500]));
        assert!(may_belong_to_a_running_command(100, &[100]));
        assert!(may_belong_to_a_running_command(100, &[500, 99]));
    }

    #[test]
    fn the_unified_hierarchy_is_found() {
        let cgroup = "4:memory:/x\n0::/user.slice/session-1.scope\n";
        assert_eq!(unified_path(cgroup), Some("/user.slice/session-1.scope"));
        assert_eq!(unified_path("4:memory:/x\n"), None);
        let mountinfo = "\
25 30 0:23 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory
26 30 0:24 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
";
        assert_eq!(
            cgroup2_mount(mountinfo),
            Some(("/", "/sys/fs/cgroup/unified"))
        );
        assert_eq!(cgroup2_mount("1 2 3:4 / / rw - ext4 /dev/sda rw"), None);
    }
}
