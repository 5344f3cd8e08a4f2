//! Real KEK provider peers for tests (SoftHSM2, moto_server, OpenBao) and the Azure Key Vault
//! stand-in, each started on loopback by the test that needs it and stopped on drop.

pub mod azure_standin;
pub mod moto;
pub mod openbao;
pub mod softhsm;

/// Waits until every thread of process `pid` is stopped, after a SIGSTOP. kill(2) returns once
/// the signal is queued, not once the process has stopped: on a loaded machine a thread of the
/// peer could still answer the next request (a "paused" OpenBao once wrapped a DEK). Panics
/// after 5 s.
pub(crate) fn wait_stopped(pid: u32) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        if all_threads_stopped(pid) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} did not stop within 5 s of SIGSTOP"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}

/// True when every task of `pid` is in state `T` (stopped) or `t` (traced).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.flatten().all(|task| {
        std::fs::read_to_string(task.path().join("stat"))
            .ok()
            // The state follows the command name, which is in parentheses and may hold spaces.
            .and_then(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next())
            })
            .is_some_and(|state| state == 'T' || state == 't')
    })
}
