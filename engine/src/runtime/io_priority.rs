//! The I/O priority of a shard's thread (`ioprio_set(2)`). io_uring stamps
//! each read and write with the priority of the thread that submits it, so
//! a shard at the realtime class has its O_DIRECT appends and its reads
//! dispatched ahead of other processes' page-cache writeback by schedulers
//! that honour classes (mq-deadline, bfq). Set once by each shard thread at
//! start. Appends can carry their own priority on their SQEs instead
//! (`storage::priority_write`), which this type encodes too.

use std::io;

const IOPRIO_CLASS_SHIFT: u16 = 13;
const IOPRIO_WHO_PROCESS: libc::c_int = 1;

/// An I/O priority class and level (0 is the highest of 0..=7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoPriority {
    /// The kernel's default (derived from the nice value): nothing is set.
    Default,
    /// The realtime class: served before every best-effort request.
    Realtime(u8),
    /// The best-effort class at a level.
    BestEffort(u8),
}

impl IoPriority {
    /// Parses `default`, `realtime:N` or `best-effort:N` (N in 0..=7).
    pub fn parse(text: &str) -> Result<IoPriority, String> {
        let level = |value: &str| -> Result<u8, String> {
            match value.parse::<u8>() {
                Ok(level) if level <= 7 => Ok(level),
                _ => Err(format!("level {value:?} is not 0..=7")),
            }
        };
        match text.split_once(':') {
            None if text == "default" => Ok(IoPriority::Default),
            Some(("realtime", value)) => Ok(IoPriority::Realtime(level(value)?)),
            Some(("best-effort", value)) => Ok(IoPriority::BestEffort(level(value)?)),
            _ => Err(format!("{text:?} is not default, realtime:N or best-effort:N")),
        }
    }

    /// The kernel's encoding (class and level), as `ioprio_set(2)` and an
    /// SQE's `ioprio` take it; 0 for the default.
    pub fn encoded(self) -> u16 {
        let (class, level) = match self {
            IoPriority::Default => return 0,
            IoPriority::Realtime(level) => (1u16, level),
            IoPriority::BestEffort(level) => (2u16, level),
        };
        (class << IOPRIO_CLASS_SHIFT) | u16::from(level)
    }

    /// Sets this priority on the calling thread (not the other threads of
    /// the process). The realtime class needs CAP_SYS_ADMIN.
    pub fn apply_to_current_thread(self) -> io::Result<()> {
        if self == IoPriority::Default {
            return Ok(());
        }
        let value = libc::c_int::from(self.encoded());
        // SAFETY: a plain syscall on the calling thread (who 0 = itself).
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, value) };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// The calling thread's priority value as the kernel reports it.
    pub fn current_thread_value() -> io::Result<libc::c_int> {
        // SAFETY: a plain syscall on the calling thread.
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_get, IOPRIO_WHO_PROCESS, 0) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(rc as libc::c_int)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_three_forms_and_refuses_others() {
        assert_eq!(IoPriority::parse("default"), Ok(IoPriority::Default));
        assert_eq!(IoPriority::parse("realtime:0"), Ok(IoPriority::Realtime(0)));
        assert_eq!(IoPriority::parse("best-effort:7"), Ok(IoPriority::BestEffort(7)));
        for bad in ["", "realtime", "realtime:8", "best-effort:-1", "idle:0", "rt:1"] {
            assert!(IoPriority::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_thread_gets_the_priority_it_sets() {
        std::thread::spawn(|| {
            IoPriority::BestEffort(3).apply_to_current_thread().expect("best effort needs no privilege");
            assert_eq!(IoPriority::current_thread_value().expect("get"), (2 << IOPRIO_CLASS_SHIFT) | 3);
            assert_eq!(IoPriority::BestEffort(3).encoded(), (2 << IOPRIO_CLASS_SHIFT) | 3);
            assert_eq!(IoPriority::Realtime(0).encoded(), 1 << IOPRIO_CLASS_SHIFT);
            assert_eq!(IoPriority::Default.encoded(), 0);
        })
        .join()
        .expect("thread");
    }
}
