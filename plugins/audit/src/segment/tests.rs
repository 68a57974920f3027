//! Time-based checkpoints and rotation, on an injected clock.

use std::sync::{Arc, Mutex};

use super::*;
use crate::record::Phase;
use crate::sink::RecordKind;

struct Fixture {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    now: Arc<Mutex<Instant>>,
    store: SegmentStore,
}

impl Fixture {
    fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("audit");
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock_now = now.clone();
        let store = SegmentStore::new(StoreSettings {
            dir: dir.clone(),
            file_mode: 0o600,
            signer: SigningKey::from_bytes(&[3; 32]),
            segment_max_bytes: 64 << 20,
            segment_max_age: Duration::from_secs(3600),
            checkpoint_every_records: 1000,
            checkpoint_every: Duration::from_secs(60),
            clock: Arc::new(move || *clock_now.lock().unwrap()),
        });
        Fixture { _tmp: tmp, dir, now, store }
    }

    fn advance(&self, secs: u64) {
        *self.now.lock().unwrap() += Duration::from_secs(secs);
    }

    fn append(&mut self) {
        let r = PendingRecord {
            kind: RecordKind::Access(Phase::Attempt),
            body: br#""phase":"attempt","request_id":"t""#.to_vec(),
        };
        self.store.append_batch(&[r]).unwrap();
    }

    fn count(&self, kind: &str) -> usize {
        let needle = format!("\"kind\":\"{kind}\"");
        list_segments(&self.dir)
            .unwrap()
            .iter()
            .map(|(_, p)| fs::read_to_string(p).unwrap().matches(&needle).count())
            .sum()
    }
}

#[test]
fn checkpoint_is_written_after_checkpoint_every_secs_with_records_pending() {
    let mut f = Fixture::new();
    f.append();
    assert_eq!(f.count("checkpoint"), 1, "only the header's");
    f.advance(59);
    f.store.tick().unwrap();
    assert_eq!(f.count("checkpoint"), 1);
    f.advance(1);
    f.store.tick().unwrap();
    assert_eq!(f.count("checkpoint"), 2);
    f.advance(600);
    f.store.tick().unwrap();
    assert_eq!(f.count("checkpoint"), 2, "nothing new to cover");
}

#[test]
fn segment_rotates_after_segment_max_age_and_the_chain_continues() {
    let mut f = Fixture::new();
    f.append();
    f.advance(3600);
    f.store.tick().unwrap();
    assert_eq!(list_segments(&f.dir).unwrap().len(), 2);
    f.append();
    let r = crate::verify(&f.dir, None);
    assert_eq!(r.status, crate::VerifyStatus::Intact, "{r}");
    assert_eq!((r.segments, r.records), (2, 2));
    // first header's, the time-based one (which also seals segment 1), the new header's
    assert_eq!(f.count("checkpoint"), 3);
}
