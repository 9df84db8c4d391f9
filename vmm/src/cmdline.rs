//! The guest kernel command line vmctl composes: the console and reboot behaviour the VMM
//! relies on, plus the workarounds a nested-through-PVM host needs.

/// What every guest gets: serial console on COM1, reboot through the i8042 (which ends the
/// VM), reboot one second after a panic, one UART, a bare i8042.
pub const BASE_ARGS: &str =
    "console=ttyS0 reboot=k panic=1 8250.nr_uarts=1 i8042.noaux i8042.nomux i8042.dumbkbd i8042.nopnp";

/// Extra arguments when /dev/kvm is nested through PVM (see docs/nested-kvm.md and
/// guest/kernel/README.md, which explains each one): CPUID is not filtered there, so features the
/// guest cannot use are cleared by name, the paravirtual KVM features (whose hypercalls do not
/// work there) are turned off, and slow, unneeded boot work is skipped. One source of truth,
/// shared with the guest kernel scripts: `guest/kernel/cmdline-nested`.
pub const PVM_ARGS: &str = include_str!("../../guest/kernel/cmdline-nested");

/// Whether this host's KVM is the PVM nested implementation.
pub fn host_is_pvm() -> bool {
    std::path::Path::new("/sys/module/kvm_pvm").exists()
}

/// The full command line: [`BASE_ARGS`], then [`PVM_ARGS`] when `pvm`, then `user`.
pub fn compose(user: Option<&str>, pvm: bool) -> String {
    let mut parts = vec![BASE_ARGS.to_string()];
    if pvm {
        parts.push(PVM_ARGS.trim().to_string());
    }
    if let Some(u) = user.map(str::trim).filter(|u| !u.is_empty()) {
        parts.push(u.to_string());
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composes_in_order() {
        let c = compose(Some(" init=/bin/sh "), true);
        assert!(c.starts_with("console=ttyS0 reboot=k"));
        assert!(c.contains("nopv clearcpuid="));
        assert!(c.ends_with(" init=/bin/sh"));
        assert_eq!(compose(None, false), BASE_ARGS);
        let clear = PVM_ARGS
            .split(' ')
            .find(|a| a.starts_with("clearcpuid="))
            .unwrap();
        assert!(clear.len() - "clearcpuid=".len() <= 128);
    }
}
