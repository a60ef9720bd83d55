//! Reading a child's output without blocking the test or the child: stdout
//! arrives line by line on a channel (so a test can wait for the next line
//! with a bound), stderr is drained on a thread as it comes (an undrained pipe
//! fills up and blocks the process on its next diagnostic line).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;

use anyhow::{Context, Result};

/// Sends each line `from` yields on the returned channel, from a thread; the
/// channel closes at end of file.
pub fn line_channel(from: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads `from` to its end on a thread; join for the text.
pub fn drain(mut from: impl Read + Send + 'static) -> JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = from.read_to_string(&mut s);
        s
    })
}

/// A process with its stdout on a line channel and its stderr drained.
pub struct Lines {
    /// The process.
    pub child: Child,
    /// Its stdout, one line per message.
    pub lines: mpsc::Receiver<String>,
    stderr: Option<JoinHandle<String>>,
}

impl Lines {
    /// Spawns `cmd` with stdout and stderr piped.
    pub fn spawn(cmd: &mut Command) -> Result<Self> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {cmd:?}"))?;
        let stdout = child.stdout.take().context("stdout")?;
        let stderr = child.stderr.take().context("stderr")?;
        Ok(Self {
            child,
            lines: line_channel(stdout),
            stderr: Some(drain(stderr)),
        })
    }

    /// Waits for the process to end and returns its status and stderr.
    pub fn finish(mut self) -> Result<(std::process::ExitStatus, String)> {
        let status = self.child.wait()?;
        let err = self
            .stderr
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        Ok((status, err))
    }
}

impl Drop for Lines {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
