//! OCI hooks (runtime-spec config.md "POSIX-platform Hooks"): each runs
//! with the container's state as JSON on its stdin, its own argv and
//! environment; one that exits non-zero, or outlives its timeout (then it
//! is killed), fails its step ([`run`]), or, after the container started
//! (poststart, poststop), is a warning and the rest still run ([`run_all`]).

use crate::spec::Hook;
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A hook that failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{step} hook {path}: {why}")]
pub struct HookError {
    /// The step ("createRuntime", ...).
    pub step: &'static str,
    /// The hook's program.
    pub path: String,
    /// What happened.
    pub why: String,
}

/// Runs `hooks` of `step` in order, each with `state` on stdin; the first
/// failure stops the rest.
pub fn run(step: &'static str, hooks: &[Hook], state: &str) -> Result<(), HookError> {
    for h in hooks {
        run_one(step, h, state)?;
    }
    Ok(())
}

/// Runs every hook of `step` in order, each with `state` on stdin, and
/// returns those that failed: for poststart and poststop, where the
/// specification (runtime.md, Lifecycle steps 10 and 13) has a failure
/// logged as a warning while the remaining hooks and the lifecycle go on.
pub fn run_all(step: &'static str, hooks: &[Hook], state: &str) -> Vec<HookError> {
    hooks
        .iter()
        .filter_map(|h| run_one(step, h, state).err())
        .collect()
}

fn run_one(step: &'static str, h: &Hook, state: &str) -> Result<(), HookError> {
    let err = |why: String| HookError {
        step,
        path: h.path.display().to_string(),
        why,
    };
    let mut cmd = Command::new(&h.path);
    if let Some((first, rest)) = h.args.split_first() {
        cmd.arg0(first).args(rest);
    }
    cmd.env_clear();
    for e in &h.env {
        if let Some((k, v)) = e.split_once('=') {
            cmd.env(k, v);
        }
    }
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| err(format!("cannot be run: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin closes the pipe: not an error.
        let _ = stdin.write_all(state.as_bytes());
    }
    let deadline = h
        .timeout
        .map(|t| Instant::now() + Duration::from_secs(u64::from(t)));
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(err(format!("wait: {e}"))),
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err(format!(
                "timed out after {} s and was killed",
                h.timeout.unwrap_or(0)
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
    }
    Err(err(format!(
        "exited with {status}{}",
        if stderr.trim().is_empty() {
            String::new()
        } else {
            format!(": {}", stderr.trim())
        }
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str, timeout: Option<u32>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["K=v".into()],
            timeout,
        }
    }

    #[test]
    fn a_hook_reads_the_state_and_its_env() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let script = format!("cat > {}; echo \"$K\" >> {}", out.display(), out.display());
        run("poststart", &[sh(&script, None)], "{\"id\":\"x\"}").expect("runs");
        let got = std::fs::read_to_string(out).expect("read");
        assert_eq!(got, "{\"id\":\"x\"}v\n");
    }

    #[test]
    fn run_all_goes_on_past_a_failing_hook() {
        let dir = tempfile::tempdir().expect("tempdir");
        let out = dir.path().join("out");
        let append = format!("echo second >> {}", out.display());
        let failed = run_all("poststop", &[sh("exit 1", None), sh(&append, None)], "{}");
        assert_eq!(failed.len(), 1, "{failed:?}");
        assert!(failed[0].why.contains("exit status: 1"), "{failed:?}");
        assert_eq!(std::fs::read_to_string(out).expect("read"), "second\n");
    }

    #[test]
    fn failure_and_timeout_fail_the_step() {
        let e = run("createRuntime", &[sh("echo no >&2; exit 3", None)], "{}").expect_err("fails");
        assert!(
            e.to_string().contains("createRuntime hook /bin/sh") && e.why.contains("no"),
            "{e}"
        );
        let e = run("prestart", &[sh("sleep 5", Some(1))], "{}").expect_err("times out");
        assert!(e.why.contains("timed out after 1 s"), "{e}");
    }
}
