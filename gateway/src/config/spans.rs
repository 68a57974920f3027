//! Key paths → source lines, so that errors found after deserialization (an unknown upstream, a
//! missing file) still name the line.
//!
//! serde_yaml keeps no positions once a value is deserialized, so the file is parsed a second time
//! with `saphyr-parser`, whose events carry spans. This happens once per load, at startup.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser};

/// The 1-based source line of every key (`routes[2].upstream`) and sequence item (`routes[2]`)
/// in a config file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySpans {
    lines: HashMap<String, usize>,
    /// The line of a key's second occurrence in the same mapping (an error serde reports at the
    /// mapping's start).
    repeats: HashMap<String, usize>,
}

/// A container being walked.
enum Frame {
    /// A mapping at `path`; `key` is the key whose value comes next, if any.
    Map { path: String, key: Option<String> },
    /// A sequence at `path`; `next` is the index of its next item.
    Seq { path: String, next: usize },
    /// A complex (non-scalar) mapping key being skipped; the number is the nesting depth.
    Skip(usize),
}

impl KeySpans {
    /// Records the line of every key in `source`. Best effort: on a syntax error the keys seen so
    /// far are kept (the deserializer reports the error itself).
    pub fn parse(source: &str) -> KeySpans {
        let mut spans = KeySpans::default();
        let mut stack: Vec<Frame> = Vec::new();
        for event in Parser::new_from_str(source) {
            let Ok((event, span)) = event else { break };
            let line = span.start.line();
            match event {
                Event::MappingStart(..) | Event::SequenceStart(..) => {
                    let is_map = matches!(event, Event::MappingStart(..));
                    spans.on_node(&mut stack, line, Some(is_map));
                }
                Event::Scalar(value, ..) => spans.on_scalar(&mut stack, line, &value),
                Event::Alias(_) => spans.on_node(&mut stack, line, None),
                Event::MappingEnd | Event::SequenceEnd => end_container(&mut stack),
                Event::DocumentEnd => stack.clear(),
                _ => {}
            }
        }
        spans
    }

    /// The line of `key_path`, or of its longest known prefix (`routes[2].tls.ca_path` falls back
    /// to `routes[2].tls`, then `routes[2]`, then `routes`).
    pub fn line(&self, key_path: &str) -> Option<usize> {
        let mut path = key_path;
        loop {
            if let Some(line) = self.lines.get(path) {
                return Some(*line);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }

    /// The line of exactly `key_path`.
    pub fn exact(&self, key_path: &str) -> Option<usize> {
        self.lines.get(key_path).copied()
    }

    /// The line where `key_path` appears a second time, if it does.
    pub fn repeated(&self, key_path: &str) -> Option<usize> {
        self.repeats.get(key_path).copied()
    }

    fn record(&mut self, path: &str, line: usize) {
        if self.lines.contains_key(path) {
            self.repeats.entry(path.to_owned()).or_insert(line);
        } else {
            self.lines.insert(path.to_owned(), line);
        }
    }

    /// A scalar: a mapping key, or a leaf value.
    fn on_scalar(&mut self, stack: &mut [Frame], line: usize, value: &str) {
        match stack.last_mut() {
            Some(Frame::Skip(_)) => {}
            Some(Frame::Map { path, key: key @ None }) => {
                let child = join(path, value);
                self.record(&child, line);
                *key = Some(value.to_owned());
            }
            _ => {
                self.take_value_slot(stack, line);
            }
        }
    }

    /// A node that is not a scalar: a container (`Some(is_map)`) or an alias (`None`).
    fn on_node(&mut self, stack: &mut Vec<Frame>, line: usize, container: Option<bool>) {
        match stack.last_mut() {
            Some(Frame::Skip(depth)) => {
                *depth += usize::from(container.is_some());
                return;
            }
            // A complex key (`? [a, b]`): no phigate key looks like this; skip it.
            Some(Frame::Map { key: key @ None, .. }) => {
                *key = Some("?".to_owned());
                if container.is_some() {
                    stack.push(Frame::Skip(1));
                }
                return;
            }
            _ => {}
        }
        let path = self.take_value_slot(stack, line);
        match container {
            Some(true) => stack.push(Frame::Map { path, key: None }),
            Some(false) => stack.push(Frame::Seq { path, next: 0 }),
            None => {}
        }
    }

    /// Consumes the slot a value fills (a mapping value or the next sequence item) and returns its
    /// key path.
    fn take_value_slot(&mut self, stack: &mut [Frame], line: usize) -> String {
        match stack.last_mut() {
            Some(Frame::Map { path, key }) => match key.take() {
                Some(k) => join(path, &k),
                None => path.clone(),
            },
            Some(Frame::Seq { path, next }) => {
                let item = format!("{path}[{next}]");
                *next += 1;
                self.record(&item, line);
                item
            }
            Some(Frame::Skip(_)) | None => String::new(),
        }
    }
}

/// Closes the innermost container (or one level of a skipped key).
fn end_container(stack: &mut Vec<Frame>) {
    if let Some(Frame::Skip(depth)) = stack.last_mut() {
        *depth -= 1;
        if *depth > 0 {
            return;
        }
    }
    stack.pop();
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}
