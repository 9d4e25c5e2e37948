//! The open-file limit: raised to its hard maximum at start, and checked against the connection
//! limits.
//!
//! Every connection is a file descriptor. Distributions start services with a soft limit of
//! 1,024, below the documented connection limits: without raising it, the 1,025th connection of
//! any kind (or the database's next file) fails with EMFILE, whichever transport holds the rest.

/// Descriptors kept for everything that is not a client connection: listeners, the database and
/// its change log, stdio, the runtime's own.
pub const RESERVED_FDS: u64 = 64;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the limit now in force.
pub fn raise_to_hard_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes into the struct it is given, which lives for the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            return Ok(raised.rlim_cur);
        }
        // Some systems refuse an unlimited hard value as the soft one: keep what we have.
    }
    Ok(limit.rlim_cur)
}

/// A warning when the connection limits together (plus [`RESERVED_FDS`]) exceed `fd_limit`:
/// then idle connections of one kind can use up the descriptors another kind needs.
pub fn budget_warning(fd_limit: u64, connection_limits: &[(&str, usize)]) -> Option<String> {
    let total: u64 = connection_limits
        .iter()
        .map(|(_, n)| *n as u64)
        .fold(RESERVED_FDS, u64::saturating_add);
    if total <= fd_limit {
        return None;
    }
    let parts: Vec<String> = connection_limits
        .iter()
        .map(|(flag, n)| format!("{flag} {n}"))
        .collect();
    Some(format!(
        "connection limits ({} + {RESERVED_FDS} reserved = {total}) exceed the open-file limit \
         {fd_limit}: raise `ulimit -n` (LimitNOFILE=) or lower them, or one kind of idle \
         connection can starve the others of descriptors",
        parts.join(" + ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_warns_only_past_the_limit() {
        let limits = [
            ("--max-http-connections", 1024),
            ("--max-tcp-connections", 1024),
        ];
        assert_eq!(budget_warning(4096, &limits), None);
        let warning = budget_warning(2000, &limits).unwrap();
        assert!(warning.contains("2112"), "{warning}");
        assert!(raise_to_hard_limit().unwrap() > 0);
    }
}
