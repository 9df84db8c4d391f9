//! `--isolation container`: the same behaviour suite as the VM levels (the reference).

mod isolation_common;

use isolation_common::Level;

suite!(
    Level::Container,
    output_and_exit_code,
    binary_output_is_exact,
    env_and_workdir,
    user,
    memory_limit,
    files_do_not_persist_after_rm,
    network_none_sees_only_loopback,
    stdin_is_forwarded,
    missing_command_fails_like_docker,
    signal_forwarding_and_teardown,
    detach_logs_stop_rm,
    rm_force_of_a_running_one,
    tty_without_a_host_terminal,
    interactive_tty_under_a_pty,
);
