//! vmctl's default seccomp profile, docker-like but written as a denylist: everything is
//! allowed except the calls below, which fail with EPERM unless the container keeps the
//! capability that docker's profile ties them to. Expressed as an OCI `LinuxSeccomp`, so the
//! one compiler in `seccomp` handles it and `vmctl-runtime spec` can print it.

use oci_spec::runtime::{
    Capability, LinuxCapabilities, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::caps::has;

/// Calls no container gets (kernel-global state, module loading, kexec, keyrings, bpf...).
const ALWAYS_DENIED: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "userfaultfd",
    "perf_event_open",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "ustat",
    "_sysctl",
    "sysfs",
    "vm86",
    "vm86old",
    "swapon",
    "swapoff",
    "kcmp",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
];

/// Calls allowed only with a capability (docker's `includes.caps`).
const BY_CAP: &[(Capability, &[&str])] = &[
    (
        Capability::SysAdmin,
        &[
            "mount",
            "umount",
            "umount2",
            "pivot_root",
            "setns",
            "unshare",
            "fsopen",
            "fsconfig",
            "fsmount",
            "fspick",
            "move_mount",
            "open_tree",
            "mount_setattr",
            "quotactl",
            "setdomainname",
            "sethostname",
            "lookup_dcookie",
            "fanotify_init",
        ],
    ),
    (
        Capability::SysPtrace,
        &["ptrace", "process_vm_readv", "process_vm_writev"],
    ),
    (Capability::SysBoot, &["reboot"]),
    (
        Capability::SysTime,
        &[
            "settimeofday",
            "clock_settime",
            "clock_adjtime",
            "adjtimex",
            "stime",
        ],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysNice,
        &["get_mempolicy", "set_mempolicy", "mbind", "move_pages"],
    ),
    (Capability::Syslog, &["syslog"]),
];

/// Namespace flags a process may not pass to clone() without CAP_SYS_ADMIN.
const NS_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWCGROUP as u64,
];

fn deny(names: &[&str], errno: i32) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(|n| n.to_string()).collect());
    s.set_action(LinuxSeccompAction::ScmpActErrno);
    s.set_errno_ret(Some(errno as u32));
    s
}

/// The default profile for a container holding `caps`.
pub fn default_profile(caps: Option<&LinuxCapabilities>) -> LinuxSeccomp {
    let mut rules = vec![deny(ALWAYS_DENIED, libc::EPERM)];
    for (cap, names) in BY_CAP {
        if !has(caps, *cap) {
            rules.push(deny(names, libc::EPERM));
        }
    }
    if !has(caps, Capability::SysAdmin) {
        // clone() with a namespace flag: one rule per flag, (flags & F) == F.
        for f in NS_FLAGS {
            let arg = LinuxSeccompArgBuilder::default()
                .index(0usize)
                .value(f)
                .value_two(f)
                .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                .build()
                .expect("all fields set");
            let mut s = deny(&["clone"], libc::EPERM);
            s.set_args(Some(vec![arg]));
            rules.push(s);
        }
        // clone3 passes flags in memory seccomp cannot read: make libc fall back to clone.
        rules.push(deny(&["clone3"], libc::ENOSYS));
    }
    let mut p = LinuxSeccomp::default();
    p.set_default_action(LinuxSeccompAction::ScmpActAllow);
    p.set_syscalls(Some(rules));
    p
}
