//! Writing to stdout when the reader may go away early (`paydvm ledger export f | head`).

use std::io::{self, Write};

/// Forwards writes and remembers whether the reader closed the pipe, so a broken pipe can be
/// told apart from a real failure even after it was wrapped into another error type.
pub struct PipeAware<W> {
    inner: W,
    broken: bool,
}

impl<W: Write> PipeAware<W> {
    pub fn new(inner: W) -> Self {
        PipeAware {
            inner,
            broken: false,
        }
    }

    pub fn broken(&self) -> bool {
        self.broken
    }

    fn note<T>(&mut self, r: io::Result<T>) -> io::Result<T> {
        if let Err(e) = &r {
            if e.kind() == io::ErrorKind::BrokenPipe {
                self.broken = true;
            }
        }
        r
    }
}

impl<W: Write> Write for PipeAware<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.inner.write(buf);
        self.note(r)
    }

    fn flush(&mut self) -> io::Result<()> {
        let r = self.inner.flush();
        self.note(r)
    }
}

/// Print `text` to stdout; a reader that stopped reading is not an error.
pub fn print(text: &str) -> anyhow::Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(anyhow::Error::new(e).context("writing to stdout"))
        }
        _ => Ok(()),
    }
}

/// Print `value` as pretty JSON followed by a newline.
pub fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    print(&text)
}
