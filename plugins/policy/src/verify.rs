//! Response verification: every patient a FHIR JSON response names must be in the permitted set.
//!
//! `GET /Observation/123` cannot be judged from the URL, and a search can leak through `_include`
//! or an upstream bug; so the body is checked before any byte of it reaches the client. The walk
//! is a streaming serde visitor: it allocates nothing per node, keeps no tree, stops at the first
//! violation, and inherits serde_json's nesting limit (128). It checks every `reference` string
//! anywhere in the document (a superset of the compartment params: `subject`, `patient`,
//! `performer`, contained resources, Bundle entries) and the `id` of every `Patient` resource.

use std::cell::{Cell, RefCell};
use std::fmt;

use phigate_plugin::{patient_of_reference as patient_of, PatientId};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::permit::Permit;

/// The outcome of a verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Every patient named is permitted.
    Clean,
    /// A patient outside the permitted set is named.
    Violation,
    /// The body is not JSON this check can read (fail closed: treat as a violation).
    Unreadable,
}

/// Checks a response body against a list of permitted patient ids.
pub fn verify(body: &[u8], permitted: &[&str]) -> Verdict {
    verify_collect(body, &Permit::patients(permitted.iter().copied())).verdict
}

/// A verification and what it saw on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The outcome.
    pub verdict: Verdict,
    /// For a clean body: the patients it named, sorted and deduplicated.
    pub named: Vec<PatientId>,
    /// For a clean body that is a Bundle: its `entry` count.
    pub entries: Option<u32>,
}

/// Checks a body against `permit`, also collecting which patients it named and how many Bundle
/// entries it has (for the stages after this one, so they need not parse the body again).
pub fn verify_collect(body: &[u8], permit: &Permit) -> Verified {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Verified { verdict: Verdict::Clean, named: Vec::new(), entries: None };
    }
    let violation = Cell::new(false);
    let seen = RefCell::new(Vec::new());
    let bundle = Cell::new(false);
    let entries = Cell::new(None);
    let walk =
        Node { permit, violation: &violation, seen: &seen, top: Some((&bundle, &entries)), count: None };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = walk.deserialize(&mut de).and_then(|()| de.end());
    let verdict = match (violation.get(), parsed) {
        (true, _) => Verdict::Violation,
        (false, Ok(())) => Verdict::Clean,
        (false, Err(_)) => Verdict::Unreadable,
    };
    if verdict != Verdict::Clean {
        return Verified { verdict, named: Vec::new(), entries: None };
    }
    let mut named = seen.into_inner();
    named.sort_unstable();
    named.dedup();
    let entries = if bundle.get() { Some(entries.get().unwrap_or(0)) } else { None };
    Verified { verdict, named, entries }
}

/// Whether the root is a Bundle, and its `entry` count: only the root node carries them.
type Root<'a> = (&'a Cell<bool>, &'a Cell<Option<u32>>);

#[derive(Clone, Copy)]
struct Node<'a> {
    permit: &'a Permit,
    violation: &'a Cell<bool>,
    /// Patients named so far (repeats next to each other are skipped; the rest deduplicated at
    /// the end).
    seen: &'a RefCell<Vec<PatientId>>,
    top: Option<Root<'a>>,
    /// Set on the root's `entry` value only: where its element count goes.
    count: Option<&'a Cell<Option<u32>>>,
}

impl Node<'_> {
    fn check(&self, id: &str) -> Result<(), ()> {
        match self.permit.get(id) {
            Some(patient) => {
                let mut seen = self.seen.borrow_mut();
                if seen.last() != Some(&patient) {
                    seen.push(patient);
                }
                Ok(())
            }
            None => {
                self.violation.set(true);
                Err(())
            }
        }
    }

    fn inner(self) -> Self {
        Node { top: None, count: None, ..self }
    }
}

fn stop<E: de::Error>() -> E {
    E::custom("patient not permitted")
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FHIR JSON")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let child = self.inner();
        let mut n = 0u32;
        while seq.next_element_seed(child)?.is_some() {
            n = n.saturating_add(1);
        }
        if let Some(count) = self.count {
            count.set(Some(n));
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut is_patient = false;
        let mut id: Option<String> = None;
        let child = self.inner();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Reference => map.next_value_seed(RefSeed(child))?,
                Key::ResourceType => {
                    let tag = map.next_value::<Tag>()?;
                    is_patient = tag.0;
                    if let Some((bundle, _)) = self.top {
                        bundle.set(tag.1);
                    }
                }
                Key::Id if id.is_none() => id = map.next_value::<Option<String>>()?,
                Key::Entry => map.next_value_seed(Node { count: self.top.map(|(_, n)| n), ..child })?,
                Key::Id | Key::Other => map.next_value_seed(child)?,
            }
        }
        if is_patient {
            self.check(id.as_deref().unwrap_or("")).map_err(|()| stop::<A::Error>())?;
        }
        Ok(())
    }
}

enum Key {
    Reference,
    ResourceType,
    Id,
    Entry,
    Other,
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Key, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeySeed {
    type Value = Key;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E>(self, k: &str) -> Result<Key, E> {
        Ok(match k {
            "reference" => Key::Reference,
            "resourceType" => Key::ResourceType,
            "id" => Key::Id,
            "entry" => Key::Entry,
            _ => Key::Other,
        })
    }
}

/// Whether a `resourceType` value is `Patient`, and whether it is `Bundle`.
struct Tag(bool, bool);

impl<'de> serde::Deserialize<'de> for Tag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Tag, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Tag;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a resource type")
            }
            fn visit_str<E>(self, s: &str) -> Result<Tag, E> {
                Ok(Tag(s == "Patient", s == "Bundle"))
            }
        }
        d.deserialize_str(V)
    }
}

/// A `reference` value: a string is checked; anything else is walked like any node.
struct RefSeed<'a>(Node<'a>);

impl<'de> DeserializeSeed<'de> for RefSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RefSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a reference")
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        match patient_of(s) {
            Some(id) => self.0.check(id).map_err(|()| stop::<E>()),
            None => Ok(()),
        }
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.visit_seq(seq)
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
}
