//! OCI `linux.seccomp` compiled into BPF with seccompiler.
//!
//! seccompiler gives one match action per filter, so a profile is split by action: one filter
//! per non-default action (match -> that action, else allow), plus a base filter (any listed
//! rule -> allow, else the default action). The kernel runs every installed filter and keeps
//! the most restrictive verdict, which equals the profile's as long as a syscall's rules do not
//! carry two different actions for the same arguments.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction as A, LinuxSeccompOperator as Op};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::syscalls;
use crate::error::{Error, Result};

type Rules = BTreeMap<i64, Vec<SeccompRule>>;

fn arch() -> TargetArch {
    #[cfg(target_arch = "aarch64")]
    return TargetArch::aarch64;
    #[cfg(not(target_arch = "aarch64"))]
    TargetArch::x86_64
}

fn action(a: A, errno: Option<u32>) -> Result<SeccompAction> {
    Ok(match a {
        A::ScmpActAllow => SeccompAction::Allow,
        A::ScmpActErrno => SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32)),
        A::ScmpActKill | A::ScmpActKillThread => SeccompAction::KillThread,
        A::ScmpActKillProcess => SeccompAction::KillProcess,
        A::ScmpActTrap => SeccompAction::Trap,
        A::ScmpActLog => SeccompAction::Log,
        A::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        A::ScmpActNotify => {
            return Err(Error::Seccomp(
                "SCMP_ACT_NOTIFY is not supported; use SCMP_ACT_ERRNO".into(),
            ))
        }
    })
}

/// Adds a rule for `nr` to `rules`; `conds` empty means "any arguments".
fn add(rules: &mut Rules, nr: i64, conds: &[SeccompCondition]) -> Result<()> {
    let entry = rules.entry(nr).or_default();
    if conds.is_empty() {
        entry.clear();
        entry.push(SeccompRule::new(vec![always()]).map_err(|e| Error::Seccomp(e.to_string()))?);
    } else {
        entry.push(SeccompRule::new(conds.to_vec()).map_err(|e| Error::Seccomp(e.to_string()))?);
    }
    Ok(())
}

/// A condition every call meets (arg0 >= 0 as unsigned), so unconditional and conditional
/// rules of one syscall can live in one rule list.
fn always() -> SeccompCondition {
    SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::Ge, 0).expect("valid")
}

fn conditions(sc: &oci_spec::runtime::LinuxSyscall) -> Result<Vec<SeccompCondition>> {
    let mut out = Vec::new();
    for a in sc.args().iter().flatten() {
        let op = match a.op() {
            Op::ScmpCmpNe => SeccompCmpOp::Ne,
            Op::ScmpCmpLt => SeccompCmpOp::Lt,
            Op::ScmpCmpLe => SeccompCmpOp::Le,
            Op::ScmpCmpEq => SeccompCmpOp::Eq,
            Op::ScmpCmpGe => SeccompCmpOp::Ge,
            Op::ScmpCmpGt => SeccompCmpOp::Gt,
            Op::ScmpCmpMaskedEq => SeccompCmpOp::MaskedEq(a.value()),
        };
        let value = match a.op() {
            Op::ScmpCmpMaskedEq => a.value_two().unwrap_or(0),
            _ => a.value(),
        };
        let idx = u8::try_from(a.index()).unwrap_or(u8::MAX);
        out.push(
            SeccompCondition::new(idx, SeccompCmpArgLen::Qword, op, value)
                .map_err(|e| Error::Seccomp(format!("argument {}: {e}", a.index())))?,
        );
    }
    Ok(out)
}

/// Compiles an OCI seccomp profile into the BPF programs to install (in order).
pub fn compile(profile: &LinuxSeccomp) -> Result<Vec<BpfProgram>> {
    let default = action(profile.default_action(), profile.default_errno_ret())?;
    let mut base = Rules::new();
    let mut by_action: Vec<(SeccompAction, Rules)> = Vec::new();
    for sc in profile.syscalls().iter().flatten() {
        let act = action(sc.action(), sc.errno_ret())?;
        let conds = conditions(sc)?;
        for name in sc.names() {
            let Some(nr) = syscalls::number(name) else {
                tracing::debug!("seccomp: unknown syscall {name:?} ignored");
                continue;
            };
            if act == default {
                continue;
            }
            add(&mut base, nr, &conds)?;
            if act != SeccompAction::Allow {
                let pos = match by_action.iter().position(|(a, _)| *a == act) {
                    Some(p) => p,
                    None => {
                        by_action.push((act.clone(), Rules::new()));
                        by_action.len() - 1
                    }
                };
                add(&mut by_action[pos].1, nr, &conds)?;
            }
        }
    }
    let mut progs = Vec::new();
    let mut push = |rules: Rules, mismatch: SeccompAction, matched: SeccompAction| -> Result<()> {
        let f = SeccompFilter::new(rules, mismatch, matched, arch())
            .map_err(|e| Error::Seccomp(e.to_string()))?;
        progs.push(BpfProgram::try_from(f).map_err(|e| Error::Seccomp(e.to_string()))?);
        Ok(())
    };
    if default != SeccompAction::Allow {
        push(base, default, SeccompAction::Allow)?;
    }
    for (act, rules) in by_action {
        push(rules, SeccompAction::Allow, act)?;
    }
    Ok(progs)
}

#[repr(C)]
struct SockFprog {
    len: u16,
    filter: *const seccompiler::sock_filter,
}

/// Installs compiled programs on the calling thread. Without no_new_privs this needs
/// CAP_SYS_ADMIN (the OCI `noNewPrivileges: false` case, installed before dropping caps).
pub fn install(progs: &[BpfProgram]) -> Result<()> {
    for p in progs {
        let prog = SockFprog {
            len: p.len() as u16,
            filter: p.as_ptr(),
        };
        // SAFETY: `prog` points at a live BPF program; the kernel copies it.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const SockFprog,
            )
        };
        if rc != 0 {
            return Err(Error::sys(
                "install seccomp filter",
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> LinuxSeccomp {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn one_filter_per_action_plus_the_default() {
        let p = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read", "write", "no_such_call"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["kill"], "action": "SCMP_ACT_KILL_PROCESS",
                 "args": [{"index": 1, "value": 9, "op": "SCMP_CMP_EQ"}]}
            ]
        }));
        // base (default ERRNO/EPERM), ERRNO(13), KILL_PROCESS
        assert_eq!(compile(&p).unwrap().len(), 3);
    }

    #[test]
    fn allow_by_default_needs_no_base_filter_and_notify_is_refused() {
        let p = crate::security::profile::default_profile(None);
        let progs = compile(&p).unwrap();
        assert_eq!(progs.len(), 2, "EPERM and ENOSYS groups");
        let notify = profile(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_NOTIFY"}]
        }));
        assert!(compile(&notify).unwrap_err().to_string().contains("NOTIFY"));
    }

    #[test]
    fn syscall_table_knows_the_usual_names() {
        assert_eq!(syscalls::number("read"), Some(0));
        assert_eq!(syscalls::number("clone3"), Some(435));
        assert_eq!(syscalls::number("nonsense"), None);
    }
}
