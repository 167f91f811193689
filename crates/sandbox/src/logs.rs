//! Function logs: a bounded ring of lines shared by a function's instances.

use std::collections::VecDeque;

use parking_lot::Mutex;

pub struct LogBuffer {
    inner: Mutex<Inner>,
    cap_bytes: usize,
}

struct Inner {
    lines: VecDeque<String>,
    bytes: usize,
    dropped: u64,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer")
            .field("cap_bytes", &self.cap_bytes)
            .finish_non_exhaustive()
    }
}

impl LogBuffer {
    pub fn new(cap_bytes: usize) -> LogBuffer {
        LogBuffer {
            inner: Mutex::new(Inner {
                lines: VecDeque::new(),
                bytes: 0,
                dropped: 0,
            }),
            cap_bytes,
        }
    }

    pub fn push(&self, line: String) {
        let mut g = self.inner.lock();
        g.bytes += line.len();
        g.lines.push_back(line);
        while g.bytes > self.cap_bytes && g.lines.len() > 1 {
            if let Some(old) = g.lines.pop_front() {
                g.bytes -= old.len();
                g.dropped += 1;
            }
        }
    }

    /// The last `n` lines (all when `n` is 0).
    pub fn tail(&self, n: usize) -> Vec<String> {
        let g = self.inner.lock();
        let skip = if n == 0 {
            0
        } else {
            g.lines.len().saturating_sub(n)
        };
        g.lines.iter().skip(skip).cloned().collect()
    }

    /// Lines of one instance, for error messages.
    pub fn tail_of(&self, instance: &str, n: usize) -> String {
        let prefix = format!("[{instance} ");
        let g = self.inner.lock();
        let mine: Vec<&String> = g.lines.iter().filter(|l| l.starts_with(&prefix)).collect();
        let skip = mine.len().saturating_sub(n);
        mine[skip..]
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_newest_lines_within_budget() {
        let b = LogBuffer::new(10);
        for i in 0..5 {
            b.push(format!("[i{} out] {i}", i % 2));
        }
        assert_eq!(b.tail(0), vec!["[i0 out] 4".to_string()]);
        let b = LogBuffer::new(1000);
        for i in 0..5 {
            b.push(format!("[i{} out] {i}", i % 2));
        }
        assert_eq!(
            b.tail(2),
            vec!["[i1 out] 3".to_string(), "[i0 out] 4".to_string()]
        );
        assert_eq!(b.tail_of("i1", 5), "[i1 out] 1\n[i1 out] 3");
    }
}
