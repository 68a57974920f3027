//! Where log lines go: stderr, written by a thread of their own.
//!
//! A pingora worker that logs (the access log line of every request, a warning) formats the line
//! and appends it to a shared buffer; it never waits on stderr. Written directly, every line was a
//! `write` system call on the worker, and a log collector slow to read the pipe (a container
//! runtime under load) stalled request handling. The writer thread writes what has gathered
//! within [`GATHER`] (at once past [`FLUSH_BYTES`]). Past [`MAX_PENDING_BYTES`] waiting (stderr
//! not being read), lines are dropped whole and counted (`phigate_log_lines_dropped_total`)
//! rather than blocking a worker. [`flush`] writes what is waiting before the process exits.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, LazyLock, Mutex, OnceLock};
use std::time::Duration;

use prometheus::{register_int_counter, IntCounter};

/// How long the writer lets lines gather before writing them.
const GATHER: Duration = Duration::from_millis(10);

/// Waiting bytes that are written at once.
const FLUSH_BYTES: usize = 64 << 10;

/// Most bytes waiting; a line that does not fit is dropped.
const MAX_PENDING_BYTES: usize = 4 << 20;

static DROPPED: LazyLock<Option<IntCounter>> = LazyLock::new(|| {
    register_int_counter!(
        "phigate_log_lines_dropped_total",
        "Log lines dropped because stderr was not read fast enough (more than 4 MiB waiting)."
    )
    .ok()
});

static SINK: OnceLock<Arc<Sink>> = OnceLock::new();

/// The buffer the workers append to, and the output the writer thread drains it to.
pub(crate) struct Sink {
    pending: Mutex<Vec<u8>>,
    /// Signalled when the buffer goes from empty to not, or past [`FLUSH_BYTES`].
    ready: Condvar,
    /// Held while a batch is taken and written: batches leave in order.
    out: Mutex<Box<dyn Write + Send>>,
    max_pending: usize,
}

impl Sink {
    pub(crate) fn new(out: Box<dyn Write + Send>, max_pending: usize) -> Arc<Sink> {
        Arc::new(Sink {
            pending: Mutex::new(Vec::new()),
            ready: Condvar::new(),
            out: Mutex::new(out),
            max_pending,
        })
    }

    /// Appends one line (whole, or not at all when the buffer is full).
    fn append(&self, line: &[u8]) {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() + line.len() > self.max_pending {
            drop(pending);
            if let Some(c) = DROPPED.as_ref() {
                c.inc();
            }
            return;
        }
        let was_empty = pending.is_empty();
        pending.extend_from_slice(line);
        let full = pending.len() >= FLUSH_BYTES;
        drop(pending);
        if was_empty || full {
            self.ready.notify_one();
        }
    }

    /// Writes everything waiting, now.
    pub(crate) fn drain(&self) {
        let mut out = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let batch = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        if !batch.is_empty() {
            // Nowhere to report a failed write of the log itself.
            let _ = out.write_all(&batch).and_then(|()| out.flush());
        }
    }

    /// The writer thread: waits for lines, lets them gather, writes them.
    fn run(&self) {
        loop {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            while pending.is_empty() {
                pending = self.ready.wait(pending).unwrap_or_else(|e| e.into_inner());
            }
            if pending.len() < FLUSH_BYTES {
                pending =
                    self.ready.wait_timeout(pending, GATHER).map_or_else(|e| e.into_inner().0, |(g, _)| g);
            }
            drop(pending);
            self.drain();
        }
    }
}

/// What `env_logger` writes each formatted record to (its `Target::Pipe`).
pub(crate) struct SinkWriter(pub(crate) Arc<Sink>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.append(buf);
        Ok(buf.len())
    }

    /// Called after every record: the writer thread writes, not the caller.
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The process's sink to stderr, with its writer thread started (once).
pub(crate) fn stderr_writer() -> io::Result<SinkWriter> {
    if let Some(sink) = SINK.get() {
        return Ok(SinkWriter(sink.clone()));
    }
    let sink = Sink::new(Box::new(io::stderr()), MAX_PENDING_BYTES);
    let thread = sink.clone();
    std::thread::Builder::new().name("phigate-log".into()).spawn(move || thread.run())?;
    Ok(SinkWriter(SINK.get_or_init(|| sink).clone()))
}

/// Writes every log line still waiting (before the process exits).
pub fn flush() {
    if let Some(sink) = SINK.get() {
        sink.drain();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An output the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap_or_else(|e| e.into_inner()).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_from_many_threads_arrive_whole_and_in_each_threads_order() {
        let out = Captured::default();
        let sink = Sink::new(Box::new(out.clone()), MAX_PENDING_BYTES);
        std::thread::scope(|s| {
            for t in 0..4 {
                let sink = sink.clone();
                s.spawn(move || {
                    let mut w = SinkWriter(sink);
                    for i in 0..500 {
                        w.write_all(format!("t{t} line {i}\n").as_bytes()).expect("write");
                        w.flush().expect("flush");
                    }
                });
            }
        });
        // Nothing reached the output from the callers: the writer thread (not started here)
        // or a drain writes it.
        assert!(out.0.lock().expect("lock").is_empty());
        sink.drain();
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 2000);
        for t in 0..4 {
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&format!("t{t} line ")))
                .map(|n| n.parse().expect("whole line"))
                .collect();
            assert_eq!(mine, (0..500).collect::<Vec<_>>());
        }
    }

    #[test]
    fn past_the_cap_lines_are_dropped_whole_not_waited_for() {
        let out = Captured::default();
        let sink = Sink::new(Box::new(out.clone()), 64);
        let mut w = SinkWriter(sink.clone());
        let before = DROPPED.as_ref().map_or(0, IntCounter::get);
        for i in 0..10 {
            w.write_all(format!("line {i:02} of the log\n").as_bytes()).expect("never an error");
        }
        assert!(DROPPED.as_ref().map_or(0, IntCounter::get) >= before + 7);
        sink.drain();
        let text = String::from_utf8(out.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text, "line 00 of the log\nline 01 of the log\nline 02 of the log\n");
        // Drained, it takes lines again.
        w.write_all(b"after\n").expect("write");
        sink.drain();
        assert!(out.0.lock().expect("lock").ends_with(b"after\n"));
    }

    #[test]
    fn the_writer_thread_writes_what_gathers() {
        let out = Captured::default();
        let sink = Sink::new(Box::new(out.clone()), MAX_PENDING_BYTES);
        let thread = sink.clone();
        std::thread::spawn(move || thread.run());
        SinkWriter(sink).write_all(b"one line\n").expect("write");
        // Bounded wait for the thread's effect (no drain here).
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while out.0.lock().expect("lock").as_slice() != b"one line\n" {
            assert!(std::time::Instant::now() < deadline, "not written within 10 s");
            std::thread::yield_now();
        }
    }
}
