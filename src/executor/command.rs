//! External command executor: the job as JSON on stdin, the result on stdout.
//!
//! The command runs with a scrubbed environment (`PATH=/usr/bin:/bin` plus the configured
//! variables, nothing inherited from the node), is killed and reaped when it overruns its
//! timeout or output cap, and is also killed and reaped if the caller stops waiting (the
//! child is supervised by its own task, which a dropped run cancels).
//!
//! Limitation: only the direct child is killed. A command that backgrounds grandchildren
//! should `exec` its worker or clean up after itself.

use std::io;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::output::CappedOutput;
use super::{BoxFuture, ExecError, ExecOutput, Executor, Limits, Reason};
use crate::job::Job;

/// The only inherited-looking variable a command gets; everything else must be configured.
const SCRUBBED_PATH: &str = "/usr/bin:/bin";
/// How much stderr is kept for the operator's log; customers never see it.
const STDERR_HEAD_BYTES: usize = Reason::MAX_CHARS;
/// How long to wait for stderr after a failed exit (a grandchild may still hold it open).
const STDERR_GRACE: Duration = Duration::from_millis(100);
const READ_CHUNK_BYTES: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandConfig {
    pub program: PathBuf,
    pub args: Vec<String>,
    /// Variables set for the command, on top of `PATH=/usr/bin:/bin` (a configured `PATH` wins).
    pub env: Vec<(String, String)>,
}

pub struct CommandExecutor {
    config: CommandConfig,
    timeout: Duration,
    max_output_bytes: usize,
}

impl CommandExecutor {
    /// Takes the timeout and output cap from `limits` to enforce them on the process itself;
    /// register it with the same limits so concurrency is bounded too.
    pub fn new(config: CommandConfig, limits: &Limits) -> Self {
        Self {
            config,
            timeout: limits.timeout(),
            max_output_bytes: limits.max_output_bytes(),
        }
    }

    fn spawn(&self) -> Result<Child, ExecError> {
        Command::new(&self.config.program)
            .args(&self.config.args)
            .env_clear()
            .env("PATH", SCRUBBED_PATH)
            .envs(self.config.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound | io::ErrorKind::PermissionDenied => {
                    ExecError::failed("the command could not be started")
                }
                _ => ExecError::transient("the command could not be started"),
            })
    }
}

impl Executor for CommandExecutor {
    fn run<'a>(&'a self, job: &'a Job) -> BoxFuture<'a, Result<ExecOutput, ExecError>> {
        Box::pin(async move {
            let input = serde_json::to_vec(job)
                .map_err(|_| ExecError::failed("the job could not be encoded"))?;
            let child = self.spawn()?;
            // Dropping this sender (the caller gave up) tells the supervisor to kill and reap.
            let (_cancel_on_drop, cancelled) = oneshot::channel::<()>();
            let supervisor = Supervisor {
                job_id: job.id.clone(),
                timeout: self.timeout,
                max_output_bytes: self.max_output_bytes,
            };
            tokio::spawn(supervisor.run(child, input, cancelled))
                .await
                .map_err(|_| ExecError::transient("the command supervisor failed"))?
        })
    }
}

struct Supervisor {
    job_id: String,
    timeout: Duration,
    max_output_bytes: usize,
}

struct Exited {
    status: ExitStatus,
    stdout: CappedOutput,
}

impl Supervisor {
    async fn run(
        self,
        mut child: Child,
        input: Vec<u8>,
        cancelled: oneshot::Receiver<()>,
    ) -> Result<ExecOutput, ExecError> {
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_and_reap(&mut child).await;
            return Err(ExecError::transient(
                "the command's pipes could not be opened",
            ));
        };
        // Fed and drained on their own tasks so a child that writes before reading (or floods
        // stderr) cannot deadlock against us.
        tokio::spawn(feed(stdin, input));
        let stderr_head = tokio::spawn(read_head(stderr, STDERR_HEAD_BYTES));

        let outcome = tokio::select! {
            exited = self.collect(&mut child, stdout) => exited,
            () = tokio::time::sleep(self.timeout) => Err(ExecError::Timeout),
            _ = cancelled => Err(ExecError::transient("the job was cancelled")),
        };
        let exited = match outcome {
            Ok(exited) => exited,
            Err(e) => {
                kill_and_reap(&mut child).await;
                stderr_head.abort();
                return Err(e);
            }
        };
        if !exited.status.success() {
            self.log_failure(exited.status, stderr_head).await;
            return Err(ExecError::failed(match exited.status.code() {
                Some(code) => format!("the command exited with status {code}"),
                None => "the command was terminated by a signal".to_owned(),
            }));
        }
        stderr_head.abort();
        exited.stdout.into_output()
    }

    async fn collect(
        &self,
        child: &mut Child,
        mut stdout: ChildStdout,
    ) -> Result<Exited, ExecError> {
        let mut output = CappedOutput::new(self.max_output_bytes);
        let mut chunk = vec![0; READ_CHUNK_BYTES];
        loop {
            let n = stdout
                .read(&mut chunk)
                .await
                .map_err(|_| ExecError::transient("reading the command's output failed"))?;
            if n == 0 {
                break;
            }
            output.extend(&chunk[..n])?;
        }
        let status = child
            .wait()
            .await
            .map_err(|_| ExecError::transient("waiting for the command failed"))?;
        Ok(Exited {
            status,
            stdout: output,
        })
    }

    async fn log_failure(&self, status: ExitStatus, stderr_head: JoinHandle<Vec<u8>>) {
        let stderr = match tokio::time::timeout(STDERR_GRACE, stderr_head).await {
            Ok(Ok(head)) => String::from_utf8_lossy(&head).into_owned(),
            _ => String::new(),
        };
        tracing::warn!(
            job = %self.job_id,
            %status,
            stderr = %Reason::new(stderr),
            "command executor failed"
        );
    }
}

/// A child that exits without reading stdin makes the write fail; that is its choice, not an
/// error of ours, so write errors are ignored.
async fn feed(mut stdin: ChildStdin, input: Vec<u8>) {
    let _ = stdin.write_all(&input).await;
}

/// Keeps the first `limit` bytes and drains the rest, so the child never blocks on a full pipe.
async fn read_head(mut reader: impl AsyncRead + Unpin, limit: usize) -> Vec<u8> {
    let mut head = Vec::new();
    let mut chunk = vec![0; READ_CHUNK_BYTES];
    while let Ok(n @ 1..) = reader.read(&mut chunk).await {
        let room = limit - head.len();
        head.extend_from_slice(&chunk[..n.min(room)]);
    }
    head
}

async fn kill_and_reap(child: &mut Child) {
    // start_kill fails only if the child has already exited; waiting reaps it either way.
    if let Err(e) = child.start_kill() {
        tracing::debug!(error = %e, "command already exited before kill");
    }
    if let Err(e) = child.wait().await {
        tracing::warn!(error = %e, "could not reap killed command");
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::executor::test_support::{limits, text_job};

    fn shell(script: &str, env: &[(&str, &str)], limits: &Limits) -> CommandExecutor {
        let config = CommandConfig {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        CommandExecutor::new(config, limits)
    }

    fn job() -> Job {
        text_job(5100, &["hello"], &[("mode", "x")])
    }

    #[tokio::test]
    async fn job_arrives_as_json_on_stdin_and_stdout_is_the_result() {
        let job = job();
        let out = shell("cat", &[], &limits(5000, 1 << 20, 1))
            .run(&job)
            .await
            .unwrap();
        let echoed: Job = serde_json::from_str(&out.content).unwrap();
        assert_eq!(echoed, job);
    }

    #[tokio::test]
    async fn non_zero_exit_is_a_permanent_failure_without_stderr() {
        let script = "echo token=hunter2 >&2; exit 3";
        let err = shell(script, &[], &limits(5000, 1024, 1))
            .run(&job())
            .await
            .unwrap_err();
        assert!(!err.retryable());
        let message = err.to_string();
        assert!(message.contains("status 3"), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[tokio::test]
    async fn missing_program_is_a_permanent_failure() {
        let config = CommandConfig {
            program: "/nonexistent/paydvm-executor".into(),
            args: vec![],
            env: vec![],
        };
        let err = CommandExecutor::new(config, &limits(5000, 1024, 1))
            .run(&job())
            .await;
        assert!(
            matches!(
                err,
                Err(ExecError::Failed {
                    retryable: false,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn invalid_utf8_output_is_a_permanent_failure() {
        let err = shell("printf '\\377'", &[], &limits(5000, 1024, 1))
            .run(&job())
            .await;
        assert!(
            matches!(
                err,
                Err(ExecError::Failed {
                    retryable: false,
                    ..
                })
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn overrunning_command_is_killed_and_reaped() {
        let pid_file = tempfile::NamedTempFile::new().unwrap();
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.path().display());
        let started = Instant::now();
        let err = shell(&script, &[], &limits(300, 1024, 1)).run(&job()).await;
        assert_eq!(err, Err(ExecError::Timeout));
        assert!(started.elapsed() < Duration::from_secs(20));
        let pid = std::fs::read_to_string(pid_file.path()).unwrap();
        // A zombie would still have a /proc entry; only a killed *and reaped* child has none.
        let proc_entry = PathBuf::from(format!("/proc/{}", pid.trim()));
        assert!(!proc_entry.exists(), "child {} is still around", pid.trim());
    }

    #[tokio::test]
    async fn endless_output_is_cut_at_the_cap() {
        let err = shell("yes", &[], &limits(10_000, 4096, 1))
            .run(&job())
            .await;
        assert_eq!(err, Err(ExecError::OutputTooLarge { limit: 4096 }));
    }

    #[tokio::test]
    async fn environment_is_scrubbed_to_path_and_configured_vars() {
        std::env::set_var("PAYDVM_EXECUTOR_TEST_LEAK_7C1E", "leaked");
        let env = [("PAYDVM_CONFIGURED", "yes")];
        let out = shell("env", &env, &limits(5000, 1 << 16, 1))
            .run(&job())
            .await
            .unwrap();
        assert!(
            !out.content.contains("PAYDVM_EXECUTOR_TEST_LEAK_7C1E"),
            "{}",
            out.content
        );
        assert!(
            out.content.contains("PAYDVM_CONFIGURED=yes"),
            "{}",
            out.content
        );
        assert!(
            out.content.contains("PATH=/usr/bin:/bin"),
            "{}",
            out.content
        );
    }

    #[tokio::test]
    async fn dropping_the_run_kills_and_reaps_the_child() {
        let pid_file = tempfile::NamedTempFile::new().unwrap();
        let script = format!("echo $$ > {}; exec sleep 30", pid_file.path().display());
        let executor = shell(&script, &[], &limits(30_000, 1024, 1));
        let job = job();
        let cut_short = tokio::time::timeout(Duration::from_millis(300), executor.run(&job)).await;
        assert!(cut_short.is_err());
        let pid = std::fs::read_to_string(pid_file.path()).unwrap();
        let proc_entry = PathBuf::from(format!("/proc/{}", pid.trim()));
        // The supervisor reaps on its own task after the drop; give it a moment.
        for _ in 0..100 {
            if !proc_entry.exists() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("child {} is still around", pid.trim());
    }
}
