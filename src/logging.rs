//! Where `serve` writes its log: stderr, through a buffer that a flusher
//! thread writes out every [`FLUSH_EVERY`] (sooner when it fills), so the
//! access line of each call costs a copy, not a system call. Warnings and
//! errors are written through at once, after whatever is buffered, so the
//! order of lines is kept. Dropping the [`LogGuard`] flushes the rest.
//!
//! A process killed outright (SIGKILL) can lose the last [`FLUSH_EVERY`] of
//! lines; the access log, not this one, is the record of every call.

use std::{
    io::{self, IsTerminal, Write},
    sync::{Arc, Condvar, Mutex},
    time::Duration,
};

use tracing::{Level, Metadata};
use tracing_subscriber::{fmt::MakeWriter, EnvFilter};

use crate::config::LogFormat;

/// Longest time a buffered line waits.
pub const FLUSH_EVERY: Duration = Duration::from_millis(100);
/// A buffer this full is written out at once.
const FLUSH_AT: usize = 64 * 1024;

#[derive(Default)]
struct State {
    pending: Vec<u8>,
    closed: bool,
}

/// Where buffered bytes finally go.
type Sink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The shared buffer in front of stderr.
#[derive(Clone)]
pub struct LogBuffer {
    inner: Arc<(Mutex<State>, Condvar)>,
    sink: Sink,
}

impl Default for LogBuffer {
    fn default() -> Self {
        LogBuffer::with_sink(Arc::new(|bytes: &[u8]| {
            // Nowhere to report a failing stderr; the lines are dropped.
            let mut err = io::stderr().lock();
            let _ = err.write_all(bytes);
            let _ = err.flush();
        }))
    }
}

impl LogBuffer {
    fn with_sink(sink: Sink) -> LogBuffer {
        LogBuffer {
            inner: Arc::new((Mutex::new(State::default()), Condvar::new())),
            sink,
        }
    }

    /// Writes out what is buffered.
    pub fn flush(&self) {
        if let Ok(mut state) = self.inner.0.lock() {
            self.write_out(&mut state.pending);
        }
    }

    fn append(&self, data: &[u8], through: bool) {
        if let Ok(mut state) = self.inner.0.lock() {
            state.pending.extend_from_slice(data);
            // Once the guard is gone no flusher runs: write through.
            if through || state.closed || state.pending.len() >= FLUSH_AT {
                self.write_out(&mut state.pending);
            }
        }
    }

    /// Called with the lock held, so lines leave in the order they came.
    fn write_out(&self, pending: &mut Vec<u8>) {
        if !pending.is_empty() {
            (self.sink)(pending);
            pending.clear();
        }
    }
}

/// One log line on its way into the buffer.
pub struct LineWriter {
    buffer: LogBuffer,
    through: bool,
}

impl Write for LineWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buffer.append(data, self.through);
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogBuffer {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        LineWriter {
            buffer: self.clone(),
            through: false,
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> LineWriter {
        LineWriter {
            buffer: self.clone(),
            through: *meta.level() <= Level::WARN,
        }
    }
}

/// Flushes and stops the flusher when dropped.
pub struct LogGuard {
    buffer: LogBuffer,
    flusher: Option<std::thread::JoinHandle<()>>,
}

impl LogGuard {
    /// Writes out what is buffered now: for lines others wait for, such
    /// as the one saying the gateway is serving.
    pub fn flush(&self) {
        self.buffer.flush();
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Ok(mut state) = self.buffer.inner.0.lock() {
            state.closed = true;
            self.buffer.write_out(&mut state.pending);
        }
        self.buffer.inner.1.notify_all();
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
    }
}

/// Installs the global subscriber (`RUST_LOG` filter, default `info`) in the
/// configured format, writing through a [`LogBuffer`].
pub fn init(format: LogFormat) -> LogGuard {
    let buffer = LogBuffer::default();
    let flusher = {
        let buffer = buffer.clone();
        std::thread::Builder::new()
            .name("log-flusher".into())
            .spawn(move || {
                let (lock, wake) = &*buffer.inner;
                let Ok(mut state) = lock.lock() else { return };
                while !state.closed {
                    buffer.write_out(&mut state.pending);
                    state = match wake.wait_timeout(state, FLUSH_EVERY) {
                        Ok((s, _)) => s,
                        Err(_) => return,
                    };
                }
            })
            .ok()
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // rustls warns on every connection from a client that sends an IP
    // address as SNI (Node does when told to connect to 127.0.0.1). The
    // name is ignored and the connection is fine, so the line is noise;
    // RUST_LOG naming rustls brings it back.
    let filter = match std::env::var("RUST_LOG") {
        Ok(v) if v.contains("rustls") => filter,
        _ => match "rustls::msgs::handshake=error".parse() {
            Ok(quiet) => filter.add_directive(quiet),
            Err(_) => filter,
        },
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(buffer.clone())
        .with_ansi(io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    LogGuard { buffer, flusher }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_stay_buffered_until_flushed_unless_written_through() {
        let out = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&out);
        let buffer = LogBuffer::with_sink(Arc::new(move |b: &[u8]| {
            seen.lock().unwrap().extend_from_slice(b)
        }));
        let mut w = buffer.make_writer();
        w.write_all(b"one\n").unwrap();
        assert_eq!(buffer.inner.0.lock().unwrap().pending, b"one\n");
        assert!(out.lock().unwrap().is_empty());
        // A warning takes what was buffered out with it, in order.
        let mut through = LineWriter {
            buffer: buffer.clone(),
            through: true,
        };
        through.write_all(b"two\n").unwrap();
        assert!(buffer.inner.0.lock().unwrap().pending.is_empty());
        assert_eq!(out.lock().unwrap().as_slice(), b"one\ntwo\n");
        // A full buffer is written out without waiting.
        let big = vec![b'x'; FLUSH_AT];
        w.write_all(&big).unwrap();
        assert!(buffer.inner.0.lock().unwrap().pending.is_empty());
        assert_eq!(out.lock().unwrap().len(), 8 + FLUSH_AT);
        w.write_all(b"three\n").unwrap();
        buffer.flush();
        assert!(out.lock().unwrap().ends_with(b"xthree\n"));
    }
}
