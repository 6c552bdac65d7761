//! Log lines (every review's audit line among them) written by a thread of
//! their own, in batches.
//!
//! The write syscall was most of an audit line's cost on the review's path, so
//! lines go to a buffer that a writer thread empties. That thread is woken once
//! per batch, not once per line: `tracing-appender`, used before, woke it for
//! every line (a futex wake, 2.5% of signoff's CPU per review at 1,000 reviews
//! a second, issue 25). A batch gathers for [`BATCH_WINDOW`] after its first
//! line, or until the buffer holds [`FULL`] bytes. Lossless: a writer finding
//! the buffer full waits for the thread to empty it. Lines are at most
//! `BATCH_WINDOW` late; [`FlushOnDrop`] writes what is left when `run` returns.

use std::io::Write;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

/// How long a batch gathers after its first line.
pub const BATCH_WINDOW: Duration = Duration::from_millis(10);
/// A buffer this full is written at once, and writers wait until it is.
pub const FULL: usize = 256 * 1024;

struct Shared<W> {
    pending: Mutex<Pending>,
    /// The thread waits here for a first line, a full buffer or the end.
    has_lines: Condvar,
    /// Writers wait here while the buffer is full.
    has_room: Condvar,
    /// Where lines go; writers use it themselves once the thread has stopped.
    out: Mutex<W>,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    /// FlushOnDrop was dropped: write what is left, then stop.
    closed: bool,
    /// The thread has stopped: writers write themselves.
    stopped: bool,
}

impl<W> Shared<W> {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A writer for `tracing_subscriber::fmt().with_writer(...)`: each line is
/// appended to the shared buffer.
pub struct BatchedWriter<W> {
    shared: Arc<Shared<W>>,
}

impl<W> Clone for BatchedWriter<W> {
    fn clone(&self) -> Self {
        BatchedWriter { shared: Arc::clone(&self.shared) }
    }
}

/// Writes what is still buffered and stops the thread when dropped.
pub struct FlushOnDrop<W> {
    shared: Arc<Shared<W>>,
    thread: Option<JoinHandle<()>>,
}

/// Starts the writer thread (named `thread_name`) writing to `out`.
pub fn batched<W: Write + Send + 'static>(out: W, thread_name: &str) -> (BatchedWriter<W>, FlushOnDrop<W>) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        has_lines: Condvar::new(),
        has_room: Condvar::new(),
        out: Mutex::new(out),
    });
    let thread = {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || write_batches(&shared))
            .expect("the log writer thread starts")
    };
    (BatchedWriter { shared: Arc::clone(&shared) }, FlushOnDrop { shared, thread: Some(thread) })
}

fn write_batches<W: Write>(shared: &Shared<W>) {
    let mut batch = Vec::new();
    loop {
        let mut pending = shared.pending();
        while pending.lines.is_empty() && !pending.closed {
            pending = shared.has_lines.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        if pending.lines.is_empty() {
            // Closed, and every line written: later lines are written by their writers.
            pending.stopped = true;
            return;
        }
        if !pending.closed && pending.lines.len() < FULL {
            // Let the batch gather; a full buffer or the end cuts the wait short.
            pending = shared
                .has_lines
                .wait_timeout_while(pending, BATCH_WINDOW, |p| !p.closed && p.lines.len() < FULL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        batch.clear();
        std::mem::swap(&mut batch, &mut pending.lines);
        drop(pending);
        shared.has_room.notify_all();
        let mut out = shared.out.lock().unwrap_or_else(PoisonError::into_inner);
        // Nowhere to report a failed log write: the next batch tries again.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
    }
}

impl<W: Write> Write for BatchedWriter<W> {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let mut pending = self.shared.pending();
        if pending.stopped {
            drop(pending);
            let mut out = self.shared.out.lock().unwrap_or_else(PoisonError::into_inner);
            return out.write_all(line).and_then(|()| out.flush()).map(|()| line.len());
        }
        while pending.lines.len() >= FULL && !pending.closed {
            pending = self.shared.has_room.wait(pending).unwrap_or_else(PoisonError::into_inner);
        }
        let first = pending.lines.is_empty();
        pending.lines.extend_from_slice(line);
        let full = pending.lines.len() >= FULL;
        drop(pending);
        // The thread sleeps until a batch's first line, and gathers until full.
        if first || full {
            self.shared.has_lines.notify_one();
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a, W: Write + 'static> tracing_subscriber::fmt::MakeWriter<'a> for BatchedWriter<W> {
    type Writer = BatchedWriter<W>;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl<W> Drop for FlushOnDrop<W> {
    fn drop(&mut self) {
        self.shared.pending().closed = true;
        self.shared.has_lines.notify_one();
        self.shared.has_room.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read, counting its writes.
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<(Vec<u8>, usize)>>);

    impl Write for Sink {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut s = self.0.lock().unwrap();
            s.0.extend_from_slice(bytes);
            s.1 += 1;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_arrives_in_order_and_lines_share_writes() {
        let sink = Sink::default();
        let (writer, flush) = batched(sink.clone(), "test-log");
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let mut w = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..2_000 {
                        w.write_all(format!("{t} {i}\n").as_bytes()).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        drop(flush);
        let (bytes, writes) = sink.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let mut next = [0usize; 4];
        for line in text.lines() {
            let (t, i) = line.split_once(' ').unwrap();
            let (t, i): (usize, usize) = (t.parse().unwrap(), i.parse().unwrap());
            assert_eq!(i, next[t], "thread {t}'s lines in order, none lost");
            next[t] += 1;
        }
        assert_eq!(next, [2_000; 4], "every line written");
        assert!(writes < 8_000 / 10, "lines are written in batches: {writes} writes for 8,000 lines");
    }

    #[test]
    fn a_full_buffer_makes_writers_wait_and_nothing_is_dropped() {
        let sink = Sink::default();
        let (mut writer, flush) = batched(sink.clone(), "test-log");
        let line = vec![b'x'; FULL / 4];
        for _ in 0..40 {
            writer.write_all(&line).unwrap();
        }
        drop(flush);
        assert_eq!(sink.0.lock().unwrap().0.len(), 40 * line.len());
    }

    #[test]
    fn lines_after_the_end_are_written_directly() {
        let sink = Sink::default();
        let (mut writer, flush) = batched(sink.clone(), "test-log");
        writer.write_all(b"before\n").unwrap();
        drop(flush);
        writer.write_all(b"after\n").unwrap();
        assert_eq!(sink.0.lock().unwrap().0, b"before\nafter\n");
    }
}
