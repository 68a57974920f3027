//! `forward:` the trail copied off the host by reading the segment files themselves.
//!
//! The store publishes, after every `fdatasync`, how far the files are durable (segment index and
//! byte length). The [`Forwarder`] reads from its cursor up to there and POSTs what it read, in
//! order, retrying a collector that is down for as long as it takes: the files are the queue, so
//! nothing is dropped and no copy of the lines waits in memory. The cursor is kept in
//! `forward-cursor.json` in the audit directory (replaced atomically, at most a second after each
//! delivery, and when the forwarder ends because the store is gone), so a restart resumes where
//! delivery stopped: lines are delivered at least once; a restart may send up to the last second's
//! lines again (each line's `seq` tells).
//!
//! Without a cursor (the first start with `forward`), delivery begins at the start of the segment
//! this process appends to, so that the copy always begins with a segment header (and
//! `phigate audit verify` can check it); that position is saved before anything is sent.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use phigate_shipper::Poster;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::segment::{list_segments, segment_name};

/// The cursor's file name, in the audit directory.
pub const CURSOR_FILE: &str = "forward-cursor.json";

/// Longest a delivered position waits before it is saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);

/// A place in the segment stream: a segment and a byte offset in it (always after a newline or
/// at 0). Ordered by segment, then offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pos {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
}

/// What the store has told the forwarder.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Published {
    /// The start of the segment this process first appended to (set once).
    pub(crate) start: Option<Pos>,
    /// How far the files are durable.
    pub(crate) durable: Option<Pos>,
}

/// The store's side.
pub(crate) type Publisher = watch::Sender<Published>;

/// Tells the forwarder the segment this process appends to (`durable`: how far it is durable).
pub(crate) fn publish_start(tx: &Publisher, durable: Pos) {
    tx.send_modify(|p| {
        p.start.get_or_insert(Pos { segment: durable.segment, offset: 0 });
        p.durable = Some(durable);
    });
}

/// Tells the forwarder the files are durable up to `pos`.
pub(crate) fn publish_durable(tx: &Publisher, pos: Pos) {
    tx.send_modify(|p| p.durable = Some(pos));
}

/// The forwarding task, until the gateway spawns it.
pub(crate) struct Forwarder {
    dir: PathBuf,
    file_mode: u32,
    rx: watch::Receiver<Published>,
    poster: Poster,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder").field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// What one read of the files gives.
enum Step {
    /// Lines to send, and the position after them.
    Send(Bytes, Pos),
    /// Nothing to send: go on from here (the next segment).
    Skip(Pos),
}

impl Forwarder {
    pub(crate) fn new(dir: PathBuf, file_mode: u32, poster: Poster) -> (Publisher, Self) {
        let (tx, rx) = watch::channel(Published::default());
        (tx, Forwarder { dir, file_mode, rx, poster })
    }

    /// Delivers the trail from the saved cursor on, until the store is gone and everything it
    /// made durable was delivered (then the cursor is saved and the task ends).
    pub(crate) async fn run(mut self) {
        let dir = self.dir.clone();
        let mut cursor = blocking(move || load_cursor(&dir)).await.flatten();
        let mut saved = cursor;
        let mut last_save = Instant::now();
        let mut store_gone = false;
        loop {
            let published = *self.rx.borrow_and_update();
            if let Some(durable) = published.durable {
                let at = *cursor.get_or_insert(published.start.unwrap_or(durable));
                if saved.is_none() {
                    // The first start: a restart before anything is delivered resumes here.
                    self.save(at).await;
                    (saved, last_save) = (Some(at), Instant::now());
                }
                if at < durable {
                    metrics_lag(&self.dir, at, durable).await;
                    let dir = self.dir.clone();
                    match blocking(move || read_step(&dir, at, durable)).await {
                        Some(Ok(Step::Send(body, next))) => {
                            self.poster.deliver(body).await;
                            cursor = Some(next);
                        }
                        Some(Ok(Step::Skip(next))) if next != at => cursor = Some(next),
                        Some(Ok(Step::Skip(_))) => {
                            log::warn!(
                                "audit forward: {} ends before the store says it does; trying again in 1s",
                                segment_name(at.segment)
                            );
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        Some(Err(e)) => {
                            log::warn!("audit forward: cannot read the trail ({e}); trying again in 1s");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        None => return,
                    }
                    if cursor != saved && last_save.elapsed() >= SAVE_EVERY {
                        self.save_cursor(cursor, &mut saved, &mut last_save).await;
                    }
                    continue;
                }
                crate::metrics::FORWARD_LAG.set(0);
            }
            if store_gone {
                self.save_cursor(cursor, &mut saved, &mut last_save).await;
                return;
            }
            let dirty = cursor != saved;
            tokio::select! {
                changed = self.rx.changed() => store_gone = changed.is_err(),
                () = tokio::time::sleep_until(last_save + SAVE_EVERY), if dirty => {
                    self.save_cursor(cursor, &mut saved, &mut last_save).await;
                }
            }
        }
    }

    async fn save_cursor(&self, cursor: Option<Pos>, saved: &mut Option<Pos>, last_save: &mut Instant) {
        if let Some(at) = cursor.filter(|c| Some(*c) != *saved) {
            self.save(at).await;
            *saved = Some(at);
            *last_save = Instant::now();
        }
    }

    async fn save(&self, at: Pos) {
        let (dir, mode) = (self.dir.clone(), self.file_mode);
        if let Some(Err(e)) = blocking(move || save_cursor(&dir, mode, at)).await {
            log::warn!("audit forward: cannot save the cursor in {} ({e})", self.dir.display());
        }
    }
}

/// Runs blocking file work off the async workers; `None` when the runtime is shutting down.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

/// Sets the lag gauge: bytes durable in the trail and not yet delivered.
async fn metrics_lag(dir: &Path, at: Pos, durable: Pos) {
    if at.segment == durable.segment {
        crate::metrics::FORWARD_LAG.set(i64::try_from(durable.offset - at.offset).unwrap_or(i64::MAX));
        return;
    }
    let dir = dir.to_path_buf();
    let lag = blocking(move || {
        let len = |i: u64| fs::metadata(dir.join(segment_name(i))).map_or(0, |m| m.len());
        let between: u64 = (at.segment + 1..durable.segment).map(len).sum();
        len(at.segment).saturating_sub(at.offset) + between + durable.offset
    })
    .await
    .unwrap_or(0);
    crate::metrics::FORWARD_LAG.set(i64::try_from(lag).unwrap_or(i64::MAX));
}

/// Reads what follows `at`, up to `durable` and at most one POST's worth, ending at a newline.
fn read_step(dir: &Path, at: Pos, durable: Pos) -> io::Result<Step> {
    let path = dir.join(segment_name(at.segment));
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return next_segment(dir, at),
        Err(e) => return Err(e),
    };
    // A segment before the newest one is complete: read it to its end.
    let end = if at.segment < durable.segment { file.metadata()?.len() } else { durable.offset };
    if at.offset >= end {
        return if at.segment < durable.segment { next_segment(dir, at) } else { Ok(Step::Skip(at)) };
    }
    let want = usize::try_from(end - at.offset).unwrap_or(usize::MAX).min(Poster::MAX_POST_BYTES);
    let mut buf = vec![0u8; want];
    let mut got = 0;
    while got < want {
        match file.read_at(&mut buf[got..], at.offset + got as u64)? {
            0 => break,
            n => got += n,
        }
    }
    buf.truncate(got);
    let reached_end = at.offset + got as u64 >= end;
    if !reached_end {
        // Cut after the last whole line (a line longer than a POST goes whole).
        if let Some(nl) = buf.iter().rposition(|&b| b == b'\n') {
            buf.truncate(nl + 1);
        }
    }
    if buf.is_empty() {
        return Ok(Step::Skip(at));
    }
    let next = Pos { segment: at.segment, offset: at.offset + buf.len() as u64 };
    Ok(Step::Send(buf.into(), next))
}

/// The start of the first segment after `at`'s (a gap is logged: segments were removed).
fn next_segment(dir: &Path, at: Pos) -> io::Result<Step> {
    let next = list_segments(dir)?.into_iter().map(|(i, _)| i).find(|&i| i > at.segment);
    match next {
        Some(i) => {
            if i != at.segment + 1 {
                log::warn!(
                    "audit forward: segments {} to {} are missing; going on with {}",
                    at.segment + 1,
                    i - 1,
                    segment_name(i)
                );
            }
            Ok(Step::Skip(Pos { segment: i, offset: 0 }))
        }
        None => Ok(Step::Skip(at)),
    }
}

/// The saved cursor, checked against the files. A cursor that does not fit them is logged and
/// replaced by the earlier place that does (lines may be sent again, none is skipped).
fn load_cursor(dir: &Path) -> Option<Pos> {
    let path = dir.join(CURSOR_FILE);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::error!("audit forward: cannot read {} ({e}); resending the newest segment", path.display());
            return newest_segment_start(dir);
        }
    };
    let Ok(pos) = serde_json::from_slice::<Pos>(&text) else {
        log::error!("audit forward: {} is not a cursor; resending the newest segment", path.display());
        return newest_segment_start(dir);
    };
    let seg = dir.join(segment_name(pos.segment));
    match File::open(&seg) {
        Ok(file) => {
            let mut before = [0u8; 1];
            let fits = pos.offset == 0
                || (file.read_at(&mut before, pos.offset - 1).ok() == Some(1) && before[0] == b'\n');
            if fits {
                Some(pos)
            } else {
                log::error!(
                    "audit forward: the cursor is not at a line of {}; resending that segment",
                    seg.display()
                );
                Some(Pos { segment: pos.segment, offset: 0 })
            }
        }
        Err(_) => {
            // The segment is gone: the next one that exists, else start where the store does.
            let next = list_segments(dir).ok()?.into_iter().map(|(i, _)| i).find(|&i| i > pos.segment)?;
            log::error!(
                "audit forward: {} is missing; going on with {}",
                segment_name(pos.segment),
                segment_name(next)
            );
            Some(Pos { segment: next, offset: 0 })
        }
    }
}

fn newest_segment_start(dir: &Path) -> Option<Pos> {
    let (segment, _) = list_segments(dir).ok()?.pop()?;
    Some(Pos { segment, offset: 0 })
}

/// Replaces the cursor file atomically (a new file, synced, renamed over the old one).
fn save_cursor(dir: &Path, mode: u32, at: Pos) -> io::Result<()> {
    let tmp = dir.join(format!("{CURSOR_FILE}.tmp"));
    let mut line = serde_json::to_vec(&at).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new().write(true).create(true).truncate(true).mode(mode).open(&tmp)?;
    f.write_all(&line)?;
    f.sync_data()?;
    fs::rename(&tmp, dir.join(CURSOR_FILE))
}
