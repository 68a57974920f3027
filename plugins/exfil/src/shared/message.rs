//! What goes on the channel, and the names of the records in Redis.
//!
//! A block is `<origin> <hash hex> <until unix secs>` (the first format, unchanged). A lift is
//! `<origin> lift <hash hex> <covers unix secs>`: four fields whose second is not a hash, so a
//! replica that predates lifts rejects it as malformed (and counts it) instead of reading it
//! as a block.

use super::Digest;

/// The second field of a lift.
const LIFT: &str = "lift";
/// Inserted after the key prefix in the name of a lift's record (`<prefix>lifted:<hash>`): a
/// replica that predates lifts loads `<prefix>*`, fails to read a hash there and skips it.
pub(super) const LIFTED: &str = "lifted:";

/// One message on the channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Message<'a> {
    /// `digest` is blocked until `until` (Unix seconds).
    Block { origin: &'a str, digest: Digest, until: u64 },
    /// Every block of `digest` ending no later than `covers` (Unix seconds) is lifted.
    Lift { origin: &'a str, digest: Digest, covers: u64 },
}

impl Message<'_> {
    /// The replica that sent it.
    pub(super) fn origin(&self) -> &str {
        match self {
            Message::Block { origin, .. } | Message::Lift { origin, .. } => origin,
        }
    }

    /// The text sent on the channel.
    pub(super) fn encode(&self) -> String {
        match self {
            Message::Block { origin, digest, until } => format!("{origin} {} {until}", hex::encode(digest)),
            Message::Lift { origin, digest, covers } => {
                format!("{origin} {LIFT} {} {covers}", hex::encode(digest))
            }
        }
    }
}

/// Parses a message; `None` when malformed.
pub(super) fn parse(msg: &[u8]) -> Option<Message<'_>> {
    let parts: Vec<&str> = std::str::from_utf8(msg).ok()?.split(' ').collect();
    match parts[..] {
        [origin, digest, until] => {
            Some(Message::Block { origin, digest: parse_digest(digest)?, until: until.parse().ok()? })
        }
        [origin, LIFT, digest, covers] => {
            Some(Message::Lift { origin, digest: parse_digest(digest)?, covers: covers.parse().ok()? })
        }
        _ => None,
    }
}

/// A record's name under the prefix: a block's hash, or a lift's (`lifted:<hash>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Record {
    Block(Digest),
    Lifted(Digest),
}

/// Reads a key found under `prefix`; `None` for anything else.
pub(super) fn parse_record(prefix: &str, key: &str) -> Option<Record> {
    let rest = key.strip_prefix(prefix)?;
    match rest.strip_prefix(LIFTED) {
        Some(hash) => parse_digest(hash).map(Record::Lifted),
        None => parse_digest(rest).map(Record::Block),
    }
}

pub(super) fn parse_digest(hex_text: &str) -> Option<Digest> {
    let mut d = [0u8; 32];
    hex::decode_to_slice(hex_text, &mut d).ok()?;
    Some(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_and_garbage_does_not() {
        let block = Message::Block { origin: "me", digest: [7; 32], until: 1_800_000_000 };
        let lift = Message::Lift { origin: "me", digest: [7; 32], covers: 1_800_000_900 };
        for m in [block, lift] {
            assert_eq!(parse(m.encode().as_bytes()), Some(m));
        }
        let text = block.encode();
        for bad in ["", "me", "me 0707 1", "me zz 1", &format!("{text} extra"), &format!("{text}x")] {
            assert_eq!(parse(bad.as_bytes()), None, "{bad}");
        }
        assert_eq!(parse(format!("me unlift {} 1", hex::encode([7; 32])).as_bytes()), None);
    }

    #[test]
    fn a_lift_is_never_read_as_a_block_by_the_first_format() {
        // The first format's parser: exactly three fields, the second a hash.
        let first = |m: &str| {
            let p: Vec<&str> = m.split(' ').collect();
            p.len() == 3 && parse_digest(p[1]).is_some()
        };
        let lift = Message::Lift { origin: "me", digest: [7; 32], covers: 1 }.encode();
        assert!(!first(&lift));
        assert!(first(&Message::Block { origin: "me", digest: [7; 32], until: 1 }.encode()));
    }

    #[test]
    fn records_are_told_apart_by_name() {
        let h = hex::encode([9u8; 32]);
        assert_eq!(parse_record("p:", &format!("p:{h}")), Some(Record::Block([9; 32])));
        assert_eq!(parse_record("p:", &format!("p:lifted:{h}")), Some(Record::Lifted([9; 32])));
        assert_eq!(parse_record("p:", &format!("q:{h}")), None);
        assert_eq!(parse_record("p:", "p:lifted:zz"), None);
    }
}
