//! `--pin`: the node under test and the load generator each on a CPU of its own (the first two
//! this process may use), and the CPU time the node spent in the measured window, read from
//! `/proc/PID/stat` for its process and every descendant.
//!
//! Invariant: a tree's CPU time only grows. It is the sum, over the tree's live processes, of
//! their own user and system time and of the time of the children they reaped (`cutime`,
//! `cstime`), so a process that ends inside the window is still counted, in its parent's; the
//! difference of two samples is the CPU the tree spent between them, whichever processes came
//! and went.

use std::collections::HashMap;
use std::io;
use std::process::Command as Process;
use std::time::{Duration, Instant};

/// CPUs a [`CpuSet`] holds (glibc's `cpu_set_t`).
const CPU_SET_BITS: usize = 1_024;
const WORD_BITS: usize = libc::c_ulong::BITS as usize;
/// Fields of `/proc/PID/stat` after the command name's `)`: state is [0] (man 5 proc).
const STAT_PPID: usize = 1;
const STAT_UTIME: usize = 11;
const STAT_STIME: usize = 12;
const STAT_CUTIME: usize = 13;
const STAT_CSTIME: usize = 14;
/// Most processes of one `/proc` scan (a tree's processes are found among them).
const PROCESSES_MAX: usize = 1 << 20;

/// Why `--pin` could not lay the run out, or a CPU time could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error(
        "--pin needs 2 CPUs (one for the node, one for the load generator); this process may use {0}"
    )]
    TooFewCpus(usize),
    #[error("the CPUs this process may use: {0}")]
    Affinity(#[source] io::Error),
    #[error("pin thread {tid} to CPU {cpu}: {source}")]
    Pin { tid: i32, cpu: usize, source: io::Error },
    #[error("{path}: {source}")]
    Read { path: String, source: io::Error },
    /// The node's process is not (or no longer) there.
    #[error("no process {0} (/proc/{0}/stat)")]
    NoProcess(u32),
    #[error("node CPU sampler: {0}")]
    Sampler(#[source] tokio::task::JoinError),
}

/// A set of CPUs, laid out as the kernel's affinity mask.
#[derive(Clone, Copy)]
#[repr(C)]
struct CpuSet([libc::c_ulong; CPU_SET_BITS / WORD_BITS]);

impl CpuSet {
    fn only(cpu: usize) -> CpuSet {
        let mut set = CpuSet([0; CPU_SET_BITS / WORD_BITS]);
        if let Some(word) = set.0.get_mut(cpu / WORD_BITS) {
            *word |= 1 << (cpu % WORD_BITS);
        }
        set
    }

    fn cpus(&self) -> Vec<usize> {
        (0..CPU_SET_BITS)
            .filter(|cpu| self.0[cpu / WORD_BITS] & (1 << (cpu % WORD_BITS)) != 0)
            .collect()
    }
}

/// Where `--pin` runs what: the node under test (and each `--compare` peer) on `node`, the load
/// generator on `load`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cores {
    pub node: usize,
    pub load: usize,
}

/// The first two of `allowed` (the CPUs this process may use, in order): the node's, then the
/// load generator's.
pub fn cores(allowed: &[usize]) -> Result<Cores, CpuError> {
    match allowed {
        [node, load, ..] => Ok(Cores { node: *node, load: *load }),
        _ => Err(CpuError::TooFewCpus(allowed.len())),
    }
}

/// The CPUs this process may run on, in order.
pub fn allowed_cpus() -> Result<Vec<usize>, CpuError> {
    let mut set = CpuSet([0; CPU_SET_BITS / WORD_BITS]);
    // SAFETY: the kernel writes at most `size_of::<CpuSet>()` bytes into `set`, which is owned,
    // writable and exactly that long; pid 0 is the calling thread.
    let done = unsafe {
        libc::sched_getaffinity(
            0,
            std::mem::size_of::<CpuSet>(),
            (&mut set as *mut CpuSet).cast::<libc::cpu_set_t>(),
        )
    };
    if done != 0 {
        return Err(CpuError::Affinity(io::Error::last_os_error()));
    }
    Ok(set.cpus())
}

/// Pins thread (or process) `tid` to `cpu`.
fn set_affinity(tid: i32, cpu: usize) -> Result<(), CpuError> {
    let set = CpuSet::only(cpu);
    // SAFETY: the kernel reads `size_of::<CpuSet>()` bytes from `set`, which is that long.
    let done = unsafe {
        libc::sched_setaffinity(
            tid,
            std::mem::size_of::<CpuSet>(),
            (&set as *const CpuSet).cast::<libc::cpu_set_t>(),
        )
    };
    if done != 0 {
        return Err(CpuError::Pin { tid, cpu, source: io::Error::last_os_error() });
    }
    Ok(())
}

/// Pins every thread of this process to `cpu`; threads started afterwards inherit it (so call
/// it before starting a runtime, whose worker count then follows: one).
pub fn pin_this_process(cpu: usize) -> Result<(), CpuError> {
    let read = |source| CpuError::Read { path: "/proc/self/task".into(), source };
    for entry in std::fs::read_dir("/proc/self/task").map_err(read)? {
        let Some(tid) = entry.map_err(read)?.file_name().to_str().and_then(|n| n.parse().ok())
        else {
            continue;
        };
        set_affinity(tid, cpu)?;
    }
    Ok(())
}

/// Makes `command`'s process run on `cpu` only, from before it executes its program (so every
/// thread and child it starts inherits it).
pub fn pin_command(command: &mut Process, cpu: usize) {
    use std::os::unix::process::CommandExt;
    let set = CpuSet::only(cpu);
    // SAFETY: the hook runs in the child between fork and exec; it only makes one
    // async-signal-safe system call on a set prepared before the fork, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            let size = std::mem::size_of::<CpuSet>();
            let set = (&set as *const CpuSet).cast::<libc::cpu_set_t>();
            if libc::sched_setaffinity(0, size, set) == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        });
    }
}

/// What the CPU time of a tree needs from one process's `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub ppid: u32,
    /// `utime + stime`: the process's own CPU time, in clock ticks.
    pub own_ticks: u64,
    /// `cutime + cstime`: the CPU time of the children it reaped, in clock ticks.
    pub children_ticks: u64,
}

/// Parses one `/proc/PID/stat` line. The command name (field 2, in parentheses) may hold
/// spaces and parentheses itself, so the fields are counted from its last `)`.
pub fn parse_stat(line: &str) -> Option<ProcStat> {
    let (_, after_name) = line.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_ascii_whitespace().take(STAT_CSTIME + 1).collect();
    let unsigned = |index: usize| fields.get(index)?.parse::<u64>().ok();
    // cutime and cstime are signed in the kernel's format.
    let signed = |index: usize| {
        fields.get(index)?.parse::<i64>().ok().map(|ticks| u64::try_from(ticks).unwrap_or(0))
    };
    Some(ProcStat {
        ppid: u32::try_from(unsigned(STAT_PPID)?).ok()?,
        own_ticks: unsigned(STAT_UTIME)?.checked_add(unsigned(STAT_STIME)?)?,
        children_ticks: signed(STAT_CUTIME)?.saturating_add(signed(STAT_CSTIME)?),
    })
}

/// The CPU ticks of `root` and of every descendant among `processes` (pid, its stat): their
/// own and their reaped children's. `None` if `root` is not among them.
pub fn tree_ticks(processes: &[(u32, ProcStat)], root: u32) -> Option<u64> {
    let mut children: HashMap<u32, Vec<usize>> = HashMap::new();
    let mut root_at = None;
    for (at, (pid, stat)) in processes.iter().enumerate() {
        children.entry(stat.ppid).or_default().push(at);
        if *pid == root {
            root_at = Some(at);
        }
    }
    let mut ticks = 0u64;
    let mut seen = vec![false; processes.len()];
    let mut next = vec![root_at?];
    while let Some(at) = next.pop() {
        if std::mem::replace(&mut seen[at], true) {
            continue;
        }
        let (pid, stat) = &processes[at];
        ticks = ticks.saturating_add(stat.own_ticks).saturating_add(stat.children_ticks);
        if let Some(kids) = children.get(pid) {
            next.extend(kids.iter().copied().filter(|&kid| !seen[kid]));
        }
    }
    Some(ticks)
}

/// Every process's stat (those that end while they are read are left out).
fn processes() -> Result<Vec<(u32, ProcStat)>, CpuError> {
    let read = |source| CpuError::Read { path: "/proc".into(), source };
    let mut processes = Vec::new();
    for entry in std::fs::read_dir("/proc").map_err(read)? {
        let Some(pid) = entry.map_err(read)?.file_name().to_str().and_then(|n| n.parse().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        if let Some(stat) = stat.as_deref().and_then(parse_stat) {
            processes.push((pid, stat));
        }
        if processes.len() >= PROCESSES_MAX {
            break;
        }
    }
    Ok(processes)
}

/// Clock ticks per second of `/proc/PID/stat`'s times.
fn ticks_per_s() -> u64 {
    // SAFETY: sysconf takes no pointer and has no side effect.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(ticks).ok().filter(|&ticks| ticks > 0).unwrap_or(100)
}

/// The CPU time `root` and its descendants have spent so far.
pub fn tree_cpu(root: u32) -> Result<Duration, CpuError> {
    let ticks = tree_ticks(&processes()?, root).ok_or(CpuError::NoProcess(root))?;
    let per_s = ticks_per_s();
    Ok(Duration::from_secs(ticks / per_s) + Duration::from_secs(ticks % per_s) / per_s as u32)
}

/// Samples `root`'s tree at `from` and at `to` on a thread of its own (a busy runtime does not
/// delay it); the handle answers the CPU time spent between the two.
pub(crate) fn sample_window(
    root: u32,
    from: Instant,
    to: Instant,
) -> tokio::task::JoinHandle<Result<Duration, CpuError>> {
    tokio::task::spawn_blocking(move || {
        std::thread::sleep(from.saturating_duration_since(Instant::now()));
        let start = tree_cpu(root)?;
        std::thread::sleep(to.saturating_duration_since(Instant::now()));
        Ok(tree_cpu(root)?.saturating_sub(start))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stat line as the kernel writes it: pid, (name), state, ppid, … utime stime cutime
    /// cstime at fields 14–17.
    fn line(pid: u32, name: &str, ppid: u32, times: [i64; 4]) -> String {
        let [utime, stime, cutime, cstime] = times;
        format!(
            "{pid} ({name}) S {ppid} {pid} {pid} 0 -1 4194560 1234 0 5 0 {utime} {stime} \
             {cutime} {cstime} 20 0 7 0 123456 1000000 200 18446744073709551615 1 1 0 0 0 0 0 \
             0 0 0 0 0 17 1 0 0 0 0 0"
        )
    }

    #[test]
    fn stat_lines_parse_from_the_last_parenthesis() {
        let stat = parse_stat(&line(42, "bookd", 7, [300, 25, 4, 1])).unwrap();
        assert_eq!(stat, ProcStat { ppid: 7, own_ticks: 325, children_ticks: 5 });
        // A name with spaces and parentheses (a process may name itself anything).
        let odd = parse_stat(&line(43, "a (b) c) S 9 9 (", 8, [10, 20, 0, 0])).unwrap();
        assert_eq!(odd, ProcStat { ppid: 8, own_ticks: 30, children_ticks: 0 });
        let spaced =
            parse_stat(&line(44, "postgres: nobody postgres [local] idle", 43, [1, 2, 3, 4]));
        assert_eq!(spaced, Some(ProcStat { ppid: 43, own_ticks: 3, children_ticks: 7 }));
        // Negative children's times (signed in the format) count as none.
        assert_eq!(parse_stat(&line(45, "x", 1, [1, 1, -1, -1])).unwrap().children_ticks, 0);
        // This process's own line parses.
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert_eq!(parse_stat(&own).unwrap().ppid, std::os::unix::process::parent_id());
    }

    #[test]
    fn bad_stat_lines_are_refused() {
        for bad in ["", "42 bookd S 1", "42 (bookd) S", "42 (bookd) S x 1 1 0 -1 0 0 0 0 0 1 1 0 0"]
        {
            assert_eq!(parse_stat(bad), None, "{bad:?}");
        }
        let full = line(42, "bookd", 7, [300, 25, 4, 1]);
        assert_eq!(parse_stat(full.split(" 300 ").next().unwrap()), None, "cut before utime");
    }

    fn stat(ppid: u32, own_ticks: u64, children_ticks: u64) -> ProcStat {
        ProcStat { ppid, own_ticks, children_ticks }
    }

    #[test]
    fn a_tree_sums_its_root_and_every_descendant() {
        // 1 → 10 (runuser) → 20 (postmaster) → 30, 31 (backends); 30 → 40; 50 is someone
        // else's.
        let processes = [
            (1, stat(0, 1_000, 0)),
            (10, stat(1, 1, 0)),
            (20, stat(10, 100, 7)),
            (30, stat(20, 50, 0)),
            (31, stat(20, 60, 2)),
            (40, stat(30, 5, 0)),
            (50, stat(1, 900, 0)),
        ];
        assert_eq!(tree_ticks(&processes, 20), Some(100 + 7 + 50 + 60 + 2 + 5));
        assert_eq!(tree_ticks(&processes, 10), Some(1 + 224));
        assert_eq!(tree_ticks(&processes, 40), Some(5));
        assert_eq!(tree_ticks(&processes, 99), None);
        // Backend 31 spent 3 more ticks and ended between two samples: the postmaster reaped it,
        // so its time moved into the postmaster's reaped children's, and the tree's total grew
        // by exactly what each process spent (10 + 3 + 20 + 1).
        let later = [
            (1, stat(0, 1_500, 0)),
            (10, stat(1, 1, 0)),
            (20, stat(10, 110, 7 + (60 + 3 + 2))),
            (30, stat(20, 70, 0)),
            (40, stat(30, 6, 0)),
        ];
        let grown = tree_ticks(&later, 10).unwrap() - tree_ticks(&processes, 10).unwrap();
        assert_eq!(grown, 10 + 3 + 20 + 1);
        // A cycle (pids reused while the scan ran) ends the walk.
        let cycle = [(1, stat(2, 1, 0)), (2, stat(1, 2, 0))];
        assert_eq!(tree_ticks(&cycle, 1), Some(3));
    }

    #[test]
    fn this_process_has_a_cpu_time_and_the_cpus_are_known() {
        let spent = tree_cpu(std::process::id()).unwrap();
        assert!(tree_cpu(std::process::id()).unwrap() >= spent, "a tree's CPU time only grows");
        assert!(matches!(tree_cpu(u32::MAX), Err(CpuError::NoProcess(_))));
        let allowed = allowed_cpus().unwrap();
        assert!(!allowed.is_empty());
        assert!(allowed.windows(2).all(|pair| pair[0] < pair[1]), "{allowed:?}");
    }

    #[test]
    fn pin_takes_the_first_two_cpus_or_says_why_not() {
        assert_eq!(cores(&[0, 1]).unwrap(), Cores { node: 0, load: 1 });
        assert_eq!(cores(&[2, 5, 7]).unwrap(), Cores { node: 2, load: 5 });
        for few in [&[][..], &[3][..]] {
            let error = cores(few).unwrap_err();
            assert!(matches!(error, CpuError::TooFewCpus(n) if n == few.len()));
            assert!(error.to_string().contains("--pin needs 2 CPUs"), "{error}");
        }
        assert_eq!(CpuSet::only(0).cpus(), [0]);
        assert_eq!(CpuSet::only(65).cpus(), [65]);
        assert!(CpuSet::only(CPU_SET_BITS).cpus().is_empty());
    }
}
