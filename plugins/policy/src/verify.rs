//! Response verification: every patient a FHIR JSON response names must be in the permitted set.
//!
//! `GET /Observation/123` cannot be judged from the URL, and a search can leak through `_include`
//! or an upstream bug; so the body is checked before any byte of it reaches the client. The walk
//! is a streaming serde visitor: it allocates nothing per node, keeps no tree, stops at the first
//! violation, and inherits serde_json's nesting limit (128). It checks every `reference` string
//! anywhere in the document (a superset of the compartment params: `subject`, `patient`,
//! `performer`, contained resources, Bundle entries) and the `id` of every `Patient` resource.
//! When the decision withholds security labels, each resource's `meta.security` codings are
//! matched too, and the walk reports which root Bundle entries (or whether the document itself)
//! carry one (see [`crate::labels`]).
//!
//! Base64 content is not opaque when it is FHIR: an object with `data` and a FHIR JSON or NDJSON
//! `contentType` (a `Binary` resource, an `Attachment`; HAPI serves bulk export files as
//! `Binary`) has its decoded content walked the same way, two levels deep at most. Other content
//! (a PDF, an image) cannot be read; a `securityContext` or other reference beside it still is.

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::fmt;

use phigate_plugin::{patient_of_reference as patient_of, PatientId};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::labels::{RootMembers, Withheld};
use crate::permit::Permit;

/// The scalar `visit_*` methods of a walker that ignores scalars (with `str`: strings too).
macro_rules! ignore_scalars {
    () => {
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
        fn visit_unit<E>(self) -> Result<(), E> {
            Ok(())
        }
    };
    (str) => {
        ignore_scalars!();
        fn visit_str<E>(self, _: &str) -> Result<(), E> {
            Ok(())
        }
    };
}

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
    /// For a clean body: what carries a security label the permit withholds. Entries are
    /// reported only for a search result (`searchset` Bundle); in any other Bundle a labelled
    /// entry withholds the whole response (a batch or history answer cannot lose entries).
    pub withheld: Withheld,
    /// For a clean body that is a JSON object: where its members are, for
    /// [`crate::without_counts`] (which then need not parse the body again).
    pub root: RootMembers,
    /// For a violation under a tenant: the patient was one the policy data places in no tenant
    /// (most likely registered since the data was last synced), rather than another tenant's.
    pub unknown_patient: bool,
}

/// Facts about the root of the document, gathered on the way.
#[derive(Default)]
struct Root {
    bundle: Cell<bool>,
    searchset: Cell<bool>,
    entries: Cell<Option<u32>>,
    /// Root `entry` elements carrying a withheld label.
    withheld: RefCell<Vec<u32>>,
    /// Where each root member's key starts (an address in the body; `None` for a key written
    /// with escapes, whose place is not known) and whether it is named `total` or `link`.
    keys: RefCell<Vec<(Option<usize>, bool)>>,
}

/// Checks a body against `permit`, also collecting which patients it named and how many Bundle
/// entries it has (for the stages after this one, so they need not parse the body again).
pub fn verify_collect(body: &[u8], permit: &Permit) -> Verified {
    let clean = |named, entries, withheld, root| Verified {
        verdict: Verdict::Clean,
        named,
        entries,
        withheld,
        root,
        unknown_patient: false,
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return clean(Vec::new(), None, Withheld::Nothing, RootMembers::default());
    }
    let violation = Cell::new(false);
    let unknown = Cell::new(false);
    let labelled = Cell::new(false);
    let seen = RefCell::new(Vec::new());
    let root = Root::default();
    let walk = Node {
        permit,
        violation: &violation,
        unknown: &unknown,
        labelled: &labelled,
        seen: &seen,
        top: Some(&root),
        entry_list: None,
        embedded: 0,
    };
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = walk.deserialize(&mut de).and_then(|()| de.end());
    let verdict = match (violation.get(), parsed) {
        (true, _) => Verdict::Violation,
        (false, Ok(())) => Verdict::Clean,
        (false, Err(_)) => Verdict::Unreadable,
    };
    if verdict != Verdict::Clean {
        return Verified {
            verdict,
            named: Vec::new(),
            entries: None,
            withheld: Withheld::Nothing,
            root: RootMembers::default(),
            unknown_patient: verdict == Verdict::Violation && unknown.get(),
        };
    }
    let mut named = seen.into_inner();
    named.sort_unstable();
    named.dedup();
    let bundle = root.bundle.get();
    let entries = if bundle { Some(root.entries.get().unwrap_or(0)) } else { None };
    let in_entries = root.withheld.into_inner();
    let withheld = if labelled.get() {
        Withheld::Whole
    } else if in_entries.is_empty() {
        Withheld::Nothing
    } else if bundle && root.searchset.get() {
        Withheld::Entries(in_entries)
    } else {
        Withheld::Whole
    };
    let members = RootMembers::found(body, root.keys.into_inner());
    clean(named, entries, withheld, members)
}

#[derive(Clone, Copy)]
struct Node<'a> {
    permit: &'a Permit,
    violation: &'a Cell<bool>,
    /// Set with `violation` when the patient is unknown to the tenant index.
    unknown: &'a Cell<bool>,
    /// Set when a withheld security label is seen (outside a root entry, or in the entry being
    /// walked).
    labelled: &'a Cell<bool>,
    /// Patients named so far (repeats next to each other are skipped; the rest deduplicated at
    /// the end).
    seen: &'a RefCell<Vec<PatientId>>,
    /// On the root node only.
    top: Option<&'a Root>,
    /// On the root's `entry` value only: where its count and labelled elements go.
    entry_list: Option<&'a Root>,
    /// How many base64 layers above this document were decoded to reach it.
    embedded: u8,
}

impl Node<'_> {
    fn check(&self, id: &str) -> Result<(), ()> {
        match self.permit.get(id) {
            Some(patient) => {
                // A patient whose chart carries a withheld label: whatever names it does too.
                if self.permit.patient_withheld(id) {
                    self.labelled.set(true);
                }
                let mut seen = self.seen.borrow_mut();
                if seen.last() != Some(&patient) {
                    seen.push(patient);
                }
                Ok(())
            }
            None => {
                self.violation.set(true);
                self.unknown.set(self.permit.unknown(id));
                Err(())
            }
        }
    }

    fn inner(self) -> Self {
        Node { top: None, entry_list: None, ..self }
    }
}

fn stop<E: de::Error>() -> E {
    E::custom("patient not permitted")
}

/// Most base64 layers decoded (a `Binary` holding a Bundle holding a `Binary`); deeper is
/// unreadable.
const MAX_EMBEDDED: u8 = 2;

/// Whether a `contentType` is FHIR JSON (one document) or NDJSON (one per line), or neither.
fn embedded_kind(content_type: &str) -> Option<bool> {
    let media = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    match media.as_str() {
        "application/fhir+json" | "application/json" | "application/json+fhir" => Some(false),
        "application/fhir+ndjson" | "application/ndjson" | "application/x-ndjson" => Some(true),
        _ => None,
    }
}

impl Node<'_> {
    /// Walks base64 `data` of FHIR `content_type` like the document around it.
    fn walk_embedded<E: de::Error>(self, content_type: &str, data: &str) -> Result<(), E> {
        use base64::Engine;
        let Some(ndjson) = embedded_kind(content_type) else {
            return Ok(());
        };
        if self.embedded >= MAX_EMBEDDED {
            return Err(E::custom("embedded FHIR content nested too deep"));
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(data.as_bytes())
            .map_err(|_| E::custom("embedded FHIR content is not base64"))?;
        let node = Node { embedded: self.embedded + 1, ..self.inner() };
        let docs: Vec<&[u8]> = if ndjson { decoded.split(|&b| b == b'\n').collect() } else { vec![&decoded] };
        for doc in docs.into_iter().filter(|d| !d.iter().all(u8::is_ascii_whitespace)) {
            let mut de = serde_json::Deserializer::from_slice(doc);
            let walked = node.deserialize(&mut de).and_then(|()| de.end());
            if self.violation.get() {
                return Err(stop());
            }
            walked.map_err(|_| E::custom("embedded FHIR content is not readable JSON"))?;
        }
        Ok(())
    }
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

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let child = self.inner();
        let mut n = 0u32;
        let Some(root) = self.entry_list else {
            while seq.next_element_seed(child)?.is_some() {}
            return Ok(());
        };
        // The root's entries: which of them carry a withheld label.
        let outside = self.labelled.replace(false);
        while seq.next_element_seed(child)?.is_some() {
            if self.labelled.replace(false) {
                root.withheld.borrow_mut().push(n);
            }
            n = n.saturating_add(1);
        }
        self.labelled.set(outside);
        root.entries.set(Some(n));
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut is_patient = false;
        let mut id: Option<String> = None;
        let (mut data, mut content_type): (Option<Text<'de>>, Option<Text<'de>>) = (None, None);
        let child = self.inner();
        loop {
            let key = match self.top {
                Some(root) => {
                    let Some((key, at)) = map.next_key_seed(RootKeySeed)? else { break };
                    root.keys.borrow_mut().push((at, matches!(key, Key::Count)));
                    key
                }
                None => match map.next_key_seed(KeySeed)? {
                    Some(key) => key,
                    None => break,
                },
            };
            match key {
                Key::Reference => map.next_value_seed(RefSeed(child))?,
                Key::ResourceType => {
                    let tag = map.next_value::<Tag>()?;
                    is_patient = tag.0;
                    if let Some(root) = self.top {
                        root.bundle.set(tag.1);
                    }
                }
                Key::Id if id.is_none() => id = map.next_value::<Option<String>>()?,
                Key::Entry => map.next_value_seed(Node { entry_list: self.top, ..child })?,
                Key::Type => match self.top {
                    Some(root) => map.next_value_seed(TypeSeed(child, &root.searchset))?,
                    None => map.next_value_seed(child)?,
                },
                Key::Meta if !self.permit.labels().is_empty() => map.next_value_seed(MetaSeed(child))?,
                Key::Data if data.is_none() => data = map.next_value_seed(StrOrWalk(child))?,
                Key::ContentType if content_type.is_none() => {
                    content_type = map.next_value_seed(StrOrWalk(child))?;
                }
                _ => map.next_value_seed(child)?,
            }
        }
        if let (Some(data), Some(content_type)) = (&data, &content_type) {
            self.walk_embedded::<A::Error>(&content_type.0, &data.0)?;
        }
        if is_patient {
            self.check(id.as_deref().unwrap_or("")).map_err(|()| stop::<A::Error>())?;
        }
        Ok(())
    }
    ignore_scalars!(str);
}

enum Key {
    Reference,
    ResourceType,
    Id,
    Entry,
    Type,
    Meta,
    Security,
    System,
    Code,
    Data,
    ContentType,
    Count,
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
        Ok(key(k))
    }
}

fn key(k: &str) -> Key {
    match k {
        "reference" => Key::Reference,
        "resourceType" => Key::ResourceType,
        "id" => Key::Id,
        "entry" => Key::Entry,
        "type" => Key::Type,
        "meta" => Key::Meta,
        "security" => Key::Security,
        "system" => Key::System,
        "code" => Key::Code,
        "data" => Key::Data,
        "contentType" => Key::ContentType,
        "total" | "link" => Key::Count,
        _ => Key::Other,
    }
}

/// A key of the root object, and where it is in the body (the address of its first character;
/// `None` when it was written with escapes and so was copied out of the body).
struct RootKeySeed;

impl<'de> DeserializeSeed<'de> for RootKeySeed {
    type Value = (Key, Option<usize>);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for RootKeySeed {
    type Value = (Key, Option<usize>);
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a key")
    }
    fn visit_borrowed_str<E>(self, k: &'de str) -> Result<Self::Value, E> {
        Ok((key(k), Some(k.as_ptr() as usize)))
    }
    fn visit_str<E>(self, k: &str) -> Result<Self::Value, E> {
        Ok((key(k), None))
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
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.visit_seq(seq)
    }
    ignore_scalars!();
}

/// The root's `type`: a string is the Bundle type (is it a search result?); anything else (a
/// resource's coded `type`) is walked like any node.
struct TypeSeed<'a>(Node<'a>, &'a Cell<bool>);

impl<'de> DeserializeSeed<'de> for TypeSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TypeSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a type")
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        self.1.set(s == "searchset");
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        self.0.visit_map(map)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        self.0.visit_seq(seq)
    }
    ignore_scalars!();
}

/// A resource's `meta` (an object, or null; anything else makes the body unreadable): its
/// `security` codings are matched against the withheld labels; the rest is walked like any node.
struct MetaSeed<'a>(Node<'a>);

impl<'de> DeserializeSeed<'de> for MetaSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for MetaSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a meta element")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::Security => map.next_value_seed(Codings(self.0))?,
                _ => map.next_value_seed(self.0)?,
            }
        }
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    // A `meta` that is not an object is not FHIR, and could hide labels: unreadable (refused).
}

/// `meta.security`: a list of codings (or null); any other shape makes the body unreadable.
struct Codings<'a>(Node<'a>);

impl<'de> DeserializeSeed<'de> for Codings<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Codings<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of codings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(Coding(self.0))?.is_some() {}
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    // Anything else (a lone coding object, a string) is not FHIR: rather than guess whether it
    // carries a label, the body is unreadable (refused).
}

/// One coding of `meta.security`: its `system` and `code` are matched; anything else in it (an
/// extension) is walked like any node.
struct Coding<'a>(Node<'a>);

impl<'de> DeserializeSeed<'de> for Coding<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Coding<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a coding")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut system: Option<Text<'de>> = None;
        let mut code: Option<Text<'de>> = None;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match key {
                Key::System if system.is_none() => system = Some(map.next_value()?),
                Key::Code if code.is_none() => code = Some(map.next_value()?),
                // A repeated system or code: which one counts is ambiguous.
                Key::System | Key::Code => {
                    return Err(de::Error::custom("repeated member in a security coding"))
                }
                _ => map.next_value_seed(self.0)?,
            }
        }
        let (system, code) = (system.map(|t| t.0), code.map(|t| t.0));
        if let Some(code) = code.as_deref() {
            if self.0.permit.labels().withholds(system.as_deref(), code) {
                self.0.labelled.set(true);
            }
        }
        Ok(())
    }
}

/// A string member kept (borrowed unless it has escapes); any other value walked like a node.
struct StrOrWalk<'a>(Node<'a>);

impl<'de> DeserializeSeed<'de> for StrOrWalk<'_> {
    type Value = Option<Text<'de>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrOrWalk<'_> {
    type Value = Option<Text<'de>>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FHIR JSON")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Some(Text(Cow::Borrowed(s))))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Some(Text(Cow::Owned(s.to_owned()))))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        self.0.visit_map(map).map(|()| None)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        self.0.visit_seq(seq).map(|()| None)
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// A string, borrowed from the body unless it has escapes.
struct Text<'de>(Cow<'de, str>);

impl<'de> serde::Deserialize<'de> for Text<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'de>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Text<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Text<'de>, E> {
                Ok(Text(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}
