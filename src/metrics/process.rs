//! Process metrics in Prometheus' standard names (`process_*`), read from `/proc/self` at each
//! scrape: resident memory, open and maximum file descriptors, CPU seconds, start time.
//!
//! Why here and not a crate: four small files of text are the whole job, and a scrape every few
//! seconds reading them costs microseconds. Elsewhere than Linux nothing is reported.

use std::fmt::Write as _;

/// Appends the process metrics to `out` (nothing where `/proc` is not there).
pub fn render(out: &mut String) {
    #[cfg(target_os = "linux")]
    linux::render(out);
    #[cfg(not(target_os = "linux"))]
    let _ = out;
}

fn gauge(out: &mut String, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
    );
}

#[cfg(target_os = "linux")]
mod linux {
    use super::gauge;

    /// The fields of `/proc/self/stat` used here, in their units.
    #[derive(Debug, PartialEq)]
    pub(super) struct Stat {
        /// User plus system CPU time, in clock ticks.
        pub(super) cpu_ticks: u64,
        /// Start time after boot, in clock ticks.
        pub(super) start_ticks: u64,
        pub(super) virtual_bytes: u64,
        pub(super) resident_pages: u64,
    }

    /// Parses `/proc/self/stat`. The command name (field 2) is in parentheses and may contain
    /// spaces and parentheses itself: fields are counted after the last `)`.
    pub(super) fn parse_stat(text: &str) -> Option<Stat> {
        let after_name = &text[text.rfind(')')? + 1..];
        // Field 3 (state) is the first one here; field N is at index N - 3.
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        let field = |n: usize| fields.get(n - 3)?.parse::<u64>().ok();
        Some(Stat {
            cpu_ticks: field(14)? + field(15)?,
            start_ticks: field(22)?,
            virtual_bytes: field(23)?,
            resident_pages: field(24)?,
        })
    }

    /// The boot time (`btime` of `/proc/stat`), in seconds since the epoch.
    pub(super) fn parse_boot_time(text: &str) -> Option<u64> {
        text.lines()
            .find_map(|line| line.strip_prefix("btime "))
            .and_then(|value| value.trim().parse().ok())
    }

    pub(super) fn render(out: &mut String) {
        // SAFETY: sysconf reads a constant of the running system.
        let ticks_per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        let ticks_per_second = u64::try_from(ticks_per_second).unwrap_or(100).max(1) as f64;
        let page_size = u64::try_from(page_size).unwrap_or(4096);
        if let Some(stat) = std::fs::read_to_string("/proc/self/stat")
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            gauge(
                out,
                "process_cpu_seconds_total",
                "counter",
                "Total user and system CPU time spent in seconds.",
                stat.cpu_ticks as f64 / ticks_per_second,
            );
            gauge(
                out,
                "process_resident_memory_bytes",
                "gauge",
                "Resident memory size in bytes.",
                stat.resident_pages.saturating_mul(page_size),
            );
            gauge(
                out,
                "process_virtual_memory_bytes",
                "gauge",
                "Virtual memory size in bytes.",
                stat.virtual_bytes,
            );
            if let Some(boot) = std::fs::read_to_string("/proc/stat")
                .ok()
                .as_deref()
                .and_then(parse_boot_time)
            {
                gauge(
                    out,
                    "process_start_time_seconds",
                    "gauge",
                    "Start time of the process since unix epoch in seconds.",
                    boot as f64 + stat.start_ticks as f64 / ticks_per_second,
                );
            }
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            // The directory being read is itself an open descriptor: not counted.
            let open = entries.count().saturating_sub(1);
            gauge(
                out,
                "process_open_fds",
                "gauge",
                "Number of open file descriptors.",
                open,
            );
        }
        let mut limit = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes into the struct it is given.
        if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
            gauge(
                out,
                "process_max_fds",
                "gauge",
                "Maximum number of open file descriptors.",
                limit.rlim_cur,
            );
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn stat_fields_are_counted_after_the_command_name() {
            let text = "4242 (state cast) (x) S 1 4242 4242 0 -1 4194560 1000 0 0 0 \
                        150 50 0 0 20 0 9 0 123456 987654321 2048 18446744073709551615";
            assert_eq!(
                parse_stat(text),
                Some(Stat {
                    cpu_ticks: 200,
                    start_ticks: 123456,
                    virtual_bytes: 987654321,
                    resident_pages: 2048,
                })
            );
            assert_eq!(parse_stat("garbage"), None);
            assert_eq!(
                parse_boot_time("cpu 1 2 3\nbtime 1764590000\nprocesses 9\n"),
                Some(1764590000)
            );
        }

        #[test]
        fn this_process_reports_memory_and_descriptors() {
            let mut out = String::new();
            super::super::render(&mut out);
            for name in [
                "process_cpu_seconds_total ",
                "process_resident_memory_bytes ",
                "process_start_time_seconds ",
                "process_open_fds ",
                "process_max_fds ",
            ] {
                assert!(out.contains(name), "{name} missing:\n{out}");
            }
        }
    }
}
