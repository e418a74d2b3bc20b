//! Peak memory and CPU time of a process, from Linux's `/proc`.

use std::fs;

/// Resource use of one process so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct ProcStats {
    /// Peak resident set size (`VmHWM`), in bytes.
    pub(crate) peak_rss_bytes: u64,
    /// User plus system CPU time of all its threads, in seconds.
    pub(crate) cpu_secs: f64,
}

/// Linux reports `utime` and `stime` in units of `USER_HZ`, which is 100 on every
/// architecture this runs on.
const USER_HZ: f64 = 100.0;

/// Reads the stats of process `pid` (`None`: this process). `None` where `/proc` is
/// missing (not Linux) or the process is gone.
pub(crate) fn read(pid: Option<u32>) -> Option<ProcStats> {
    let dir = match pid {
        Some(pid) => format!("/proc/{pid}"),
        None => "/proc/self".to_owned(),
    };
    let status = fs::read_to_string(format!("{dir}/status")).ok()?;
    let peak_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    let stat = fs::read_to_string(format!("{dir}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields resume after
    // its last ')'. Then field 3 is at index 0, so utime (14) and stime (15) are at 11, 12.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    Some(ProcStats {
        peak_rss_bytes: peak_kib * 1024,
        cpu_secs: (ticks(11)? + ticks(12)?) as f64 / USER_HZ,
    })
}

/// Resets this process's peak RSS to its current RSS (Linux ≥ 4.0), so that a later
/// [`read`] reports the peak since now. False where that is not possible.
pub(crate) fn reset_peak_rss() -> bool {
    fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Bytes this process has written through system calls so far — to files, pipes and
/// sockets alike (`wchar` in `/proc/self/io`). `None` where `/proc` is missing.
pub(crate) fn written_bytes() -> Option<u64> {
    let io = fs::read_to_string("/proc/self/io").ok()?;
    io.lines()
        .find_map(|l| l.strip_prefix("wchar:"))?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_process() {
        let Some(before) = read(None) else { return };
        assert!(before.peak_rss_bytes > 1 << 20, "{before:?}");
        reset_peak_rss();
        // Touch 64 MiB and burn a little CPU: both figures move.
        let mut v = vec![0u8; 64 << 20];
        for (i, b) in v.iter_mut().enumerate().step_by(4096) {
            *b = i as u8 | 1;
        }
        let mut x = 0u64;
        for i in 0..20_000_000u64 {
            x = x
                .wrapping_mul(31)
                .wrapping_add(i ^ u64::from(v[(i as usize * 4096) % v.len()]));
        }
        std::hint::black_box(x);
        let after = read(None).unwrap();
        assert!(after.peak_rss_bytes >= 64 << 20, "{after:?}");
        assert!(after.cpu_secs >= before.cpu_secs);
        drop(v);
    }
}
