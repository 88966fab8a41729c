//! Daemon events (`quota.threshold`, `vault.locked`, ...) fanned out to subscribed connections.
//!
//! Any module emits with [`Bus::emit`], describing the event's fields with a `Serialize` struct;
//! the bus keeps them as a typed [`Event`]: its kind and its fields, in declaration order, as
//! plain [`Field`] values. The bus knows no wire format: `events.subscribe` (api/events.rs)
//! forwards the kinds a connection asked for as `event` notifications `[{kind, ...}]`, encoding
//! each event into MessagePack as it sends it.
//!
//! Invariants: a connection never receives a notification it did not subscribe to; a subscriber
//! that falls behind by more than the buffer gets one `events.lagged {missed}` event instead of
//! unbounded buffering; an event's fields are flat (scalars, strings, options of them, unit enum
//! variants as their names): anything else is a bug, caught by a debug assertion, and the event is
//! sent with its kind alone.

use serde::ser::{self, Impossible};
use serde::Serialize;
use std::sync::Arc;
use tokio::sync::broadcast;

/// Every event kind the daemon emits (`as_str` is its name on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    QuotaThreshold,
    QuotaExceeded,
    TierChanged,
    RateLimited,
    SyncPaused,
    SyncResumed,
    VaultLocked,
    VaultUnlocked,
    KeyInvalid,
    UsageOvershoot,
    CreditsLow,
    CreditsExhausted,
    CreditsGranted,
}

impl EventKind {
    pub const ALL: &'static [EventKind] = &[
        EventKind::QuotaThreshold,
        EventKind::QuotaExceeded,
        EventKind::TierChanged,
        EventKind::RateLimited,
        EventKind::SyncPaused,
        EventKind::SyncResumed,
        EventKind::VaultLocked,
        EventKind::VaultUnlocked,
        EventKind::KeyInvalid,
        EventKind::UsageOvershoot,
        EventKind::CreditsLow,
        EventKind::CreditsExhausted,
        EventKind::CreditsGranted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::QuotaThreshold => "quota.threshold",
            EventKind::QuotaExceeded => "quota.exceeded",
            EventKind::TierChanged => "tier.changed",
            EventKind::RateLimited => "rate_limited",
            EventKind::SyncPaused => "sync.paused",
            EventKind::SyncResumed => "sync.resumed",
            EventKind::VaultLocked => "vault.locked",
            EventKind::VaultUnlocked => "vault.unlocked",
            EventKind::KeyInvalid => "key.invalid",
            EventKind::UsageOvershoot => "usage.overshoot",
            EventKind::CreditsLow => "credits.low",
            EventKind::CreditsExhausted => "credits.exhausted",
            EventKind::CreditsGranted => "credits.granted",
        }
    }

    /// The kind called `name`, if there is one.
    pub fn parse(name: &str) -> Option<EventKind> {
        EventKind::ALL.iter().copied().find(|k| k.as_str() == name)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Sent to a subscriber that missed events because it read too slowly.
pub const LAGGED: &str = "events.lagged";

/// The value of one event field.
#[derive(Debug, Clone, PartialEq)]
pub enum Field {
    /// `None` (or `()`).
    Nil,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    /// A string, a `char`, or a unit enum variant's (serde) name.
    Str(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: EventKind,
    /// The fields after `kind`, in the order the emitter's struct declares them.
    pub fields: Vec<(&'static str, Field)>,
}

impl Event {
    /// The field called `name`, if the event has one.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
}

#[derive(Debug, Clone)]
pub struct Bus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Bus {
    fn default() -> Self {
        Bus { tx: broadcast::channel(1024).0 }
    }
}

impl Bus {
    /// Emits an event; `fields` is a struct of flat fields (see the module invariants), or `()`.
    pub fn emit<T: Serialize + ?Sized>(&self, kind: EventKind, fields: &T) {
        let fields = capture(fields).unwrap_or_else(|e| {
            debug_assert!(false, "event {kind}: {e}");
            tracing::warn!(kind = kind.as_str(), "event sent without its fields: {e}");
            Vec::new()
        });
        tracing::debug!(kind = kind.as_str(), "event");
        let _ = self.tx.send(Arc::new(Event { kind, fields }));
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.tx.subscribe()
    }
}

/// The fields of `value`: a struct's, in order; none for `()`, a unit struct or `None`.
fn capture<T: Serialize + ?Sized>(value: &T) -> Result<Vec<(&'static str, Field)>, NotFlat> {
    match value.serialize(Capture)? {
        Captured::Struct(fields) => Ok(fields),
        Captured::Value(Field::Nil) => Ok(Vec::new()),
        Captured::Value(_) => Err(NotFlat("the fields must be a struct, not a single value".into())),
    }
}

/// Why a value cannot be an event's fields.
#[derive(Debug)]
struct NotFlat(String);

impl std::fmt::Display for NotFlat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotFlat {}

impl ser::Error for NotFlat {
    fn custom<M: std::fmt::Display>(msg: M) -> Self {
        NotFlat(msg.to_string())
    }
}

enum Captured {
    Value(Field),
    Struct(Vec<(&'static str, Field)>),
}

/// A serde serializer into [`Captured`]: a struct of flat fields, or one flat value.
struct Capture;

fn not_flat<T>(what: &str) -> Result<T, NotFlat> {
    Err(NotFlat(format!("{what} cannot be an event field")))
}

impl ser::Serializer for Capture {
    type Ok = Captured;
    type Error = NotFlat;
    type SerializeSeq = Impossible<Captured, NotFlat>;
    type SerializeTuple = Impossible<Captured, NotFlat>;
    type SerializeTupleStruct = Impossible<Captured, NotFlat>;
    type SerializeTupleVariant = Impossible<Captured, NotFlat>;
    type SerializeMap = Impossible<Captured, NotFlat>;
    type SerializeStruct = StructFields;
    type SerializeStructVariant = Impossible<Captured, NotFlat>;

    fn serialize_bool(self, v: bool) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Bool(v)))
    }
    fn serialize_i8(self, v: i8) -> Result<Captured, NotFlat> {
        self.serialize_i64(v.into())
    }
    fn serialize_i16(self, v: i16) -> Result<Captured, NotFlat> {
        self.serialize_i64(v.into())
    }
    fn serialize_i32(self, v: i32) -> Result<Captured, NotFlat> {
        self.serialize_i64(v.into())
    }
    fn serialize_i64(self, v: i64) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Int(v)))
    }
    fn serialize_u8(self, v: u8) -> Result<Captured, NotFlat> {
        self.serialize_u64(v.into())
    }
    fn serialize_u16(self, v: u16) -> Result<Captured, NotFlat> {
        self.serialize_u64(v.into())
    }
    fn serialize_u32(self, v: u32) -> Result<Captured, NotFlat> {
        self.serialize_u64(v.into())
    }
    fn serialize_u64(self, v: u64) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Uint(v)))
    }
    fn serialize_f32(self, _: f32) -> Result<Captured, NotFlat> {
        not_flat("an f32 (use f64)")
    }
    fn serialize_f64(self, v: f64) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Float(v)))
    }
    fn serialize_char(self, v: char) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Str(v.to_string())))
    }
    fn serialize_str(self, v: &str) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Str(v.to_string())))
    }
    fn serialize_bytes(self, _: &[u8]) -> Result<Captured, NotFlat> {
        not_flat("bytes")
    }
    fn serialize_none(self) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Nil))
    }
    fn serialize_some<T: Serialize + ?Sized>(self, value: &T) -> Result<Captured, NotFlat> {
        value.serialize(self)
    }
    fn serialize_unit(self) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Nil))
    }
    fn serialize_unit_struct(self, _: &'static str) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Nil))
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> Result<Captured, NotFlat> {
        Ok(Captured::Value(Field::Str(variant.to_string())))
    }
    fn serialize_newtype_struct<T: Serialize + ?Sized>(self, _: &'static str, value: &T) -> Result<Captured, NotFlat> {
        value.serialize(self)
    }
    fn serialize_newtype_variant<T: Serialize + ?Sized>(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: &T,
    ) -> Result<Captured, NotFlat> {
        not_flat("an enum variant with data")
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<Self::SerializeSeq, NotFlat> {
        not_flat("a sequence")
    }
    fn serialize_tuple(self, _: usize) -> Result<Self::SerializeTuple, NotFlat> {
        not_flat("a tuple")
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<Self::SerializeTupleStruct, NotFlat> {
        not_flat("a tuple struct")
    }
    fn serialize_tuple_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeTupleVariant, NotFlat> {
        not_flat("an enum variant with data")
    }
    fn serialize_map(self, _: Option<usize>) -> Result<Self::SerializeMap, NotFlat> {
        not_flat("a map")
    }
    fn serialize_struct(self, _: &'static str, len: usize) -> Result<StructFields, NotFlat> {
        Ok(StructFields(Vec::with_capacity(len)))
    }
    fn serialize_struct_variant(
        self,
        _: &'static str,
        _: u32,
        _: &'static str,
        _: usize,
    ) -> Result<Self::SerializeStructVariant, NotFlat> {
        not_flat("an enum variant with data")
    }
}

/// The fields of a struct being captured.
struct StructFields(Vec<(&'static str, Field)>);

impl ser::SerializeStruct for StructFields {
    type Ok = Captured;
    type Error = NotFlat;

    fn serialize_field<T: Serialize + ?Sized>(&mut self, key: &'static str, value: &T) -> Result<(), NotFlat> {
        match value.serialize(Capture)? {
            Captured::Value(v) => self.0.push((key, v)),
            Captured::Struct(_) => return not_flat(&format!("a struct (in `{key}`)")),
        }
        Ok(())
    }

    fn end(self) -> Result<Captured, NotFlat> {
        Ok(Captured::Struct(self.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[derive(Serialize, Clone, Copy)]
    #[serde(rename_all = "snake_case")]
    enum Reason {
        IdleTimeout,
    }

    #[derive(Serialize)]
    struct Flat<'a> {
        name: &'a str,
        none: Option<&'a str>,
        some: Option<u16>,
        neg: i32,
        big: u64,
        share: f64,
        on: bool,
        reason: Reason,
        #[serde(skip_serializing_if = "Option::is_none")]
        skipped: Option<u8>,
    }

    #[test]
    fn captures_flat_fields_in_order() {
        let bus = Bus::default();
        let mut rx = bus.subscribe();
        let f = Flat {
            name: "k",
            none: None,
            some: Some(401),
            neg: -3,
            big: u64::MAX,
            share: 0.5,
            on: true,
            reason: Reason::IdleTimeout,
            skipped: None,
        };
        bus.emit(EventKind::VaultLocked, &f);
        let e = rx.try_recv().unwrap();
        assert_eq!(e.kind, EventKind::VaultLocked);
        assert_eq!(
            e.fields,
            vec![
                ("name", Field::Str("k".into())),
                ("none", Field::Nil),
                ("some", Field::Uint(401)),
                ("neg", Field::Int(-3)),
                ("big", Field::Uint(u64::MAX)),
                ("share", Field::Float(0.5)),
                ("on", Field::Bool(true)),
                ("reason", Field::Str("idle_timeout".into())),
            ]
        );
        assert_eq!(e.field("some"), Some(&Field::Uint(401)));
        assert_eq!(e.field("skipped"), None);
    }

    #[test]
    fn no_fields_and_refused_shapes() {
        #[derive(Serialize)]
        struct NoFields {}
        assert_eq!(capture(&NoFields {}).unwrap(), vec![]);
        assert_eq!(capture(&()).unwrap(), vec![]);
        #[derive(Serialize)]
        struct Nested {
            inner: NoFields,
        }
        assert!(capture(&Nested { inner: NoFields {} }).is_err());
        #[derive(Serialize)]
        struct List {
            items: Vec<u8>,
        }
        assert!(capture(&List { items: vec![1] }).is_err());
        assert!(capture(&5u8).is_err());
    }
}
