//! JSON in and out of `Value` through serde, so `serde_json::from_slice`
//! and `to_writer` work on events directly.

use super::map::Builder;
use super::{Map, Number, Str, Value};
use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use std::fmt;

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Bool(b) => s.serialize_bool(*b),
            Value::Number(n) => n.serialize(s),
            Value::String(v) => s.serialize_str(v),
            Value::Array(a) => s.collect_seq(a),
            Value::Object(m) => m.serialize(s),
        }
    }
}

impl Serialize for Map {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.len()))?;
        for (k, v) in self.iter() {
            map.serialize_entry(k.as_str(), v)?;
        }
        map.end()
    }
}

/// The size of `v` encoded as compact JSON, without building the text.
pub fn encoded_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 += b.len();
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    // Writing to a counter cannot fail, and a `Value` always serializes.
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

/// How deep arrays and objects may nest in decoded input (SPEC §10).
pub const MAX_NESTING: u32 = 128;

/// `bytes` as one JSON value, in time linear in their size, refusing
/// nesting deeper than [`MAX_NESTING`]. serde_json's own limit (which
/// refuses 128 levels already) is off here, so the depth counted by
/// [`ValueVisitor`] is the one rule; the stack holds 128 levels easily.
/// The hand-written decoder takes what it is sure of; serde_json decides
/// the rest, so its value or error (with line and column) is the answer.
pub fn from_json(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    if let Some(v) = super::json_fast::parse(bytes) {
        return Ok(v);
    }
    from_json_exact(bytes)
}

fn from_json_exact(bytes: &[u8]) -> Result<Value, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    de.disable_recursion_limit();
    let v = de.deserialize_any(ValueVisitor { depth: 0 })?;
    de.end()?;
    Ok(v)
}

thread_local! {
    /// How many keys the last event decoded on this thread had. Events of
    /// one stream share their shape, so an event's entries are allocated
    /// once at about the right size instead of growing 8 -> 16 (the
    /// reallocation was ~3 % of decoding the reference data).
    pub(super) static TOP_KEYS: std::cell::Cell<usize> = const { std::cell::Cell::new(8) };
}

/// Room left in an event's entries for keys that stages add
/// (`.alert = true`) without growing them.
pub(super) const ROOM_FOR_NEW_KEYS: usize = 2;

/// Builds a `Value`; `depth` is how many arrays and objects enclose it.
struct ValueVisitor {
    depth: u32,
}

impl ValueVisitor {
    fn enter<E: serde::de::Error>(&self) -> Result<ValueVisitor, E> {
        if self.depth >= MAX_NESTING {
            return Err(E::custom(format_args!(
                "nesting deeper than {MAX_NESTING} levels"
            )));
        }
        Ok(ValueVisitor {
            depth: self.depth + 1,
        })
    }
}

impl<'de> serde::de::DeserializeSeed<'de> for ValueVisitor {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(Str::new(v)))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(Str::from(v)))
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(4).min(1024));
        while let Some(x) = seq.next_element_seed(ValueVisitor { depth: inner.depth })? {
            v.push(x);
        }
        Ok(Value::Array(v))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Value, A::Error> {
        let inner = self.enter()?;
        let top = self.depth == 0;
        let capacity = match access.size_hint() {
            Some(n) => n,
            None if top => TOP_KEYS.get() + ROOM_FOR_NEW_KEYS,
            None => 8,
        };
        // Duplicate keys: the last one wins, at the first one's place (jq);
        // the builder finds them in time linear in the object's size.
        let mut m = Builder::new(Map::with_capacity(capacity.min(1024)));
        while let Some(key) = access.next_key::<Str>()? {
            let value = access.next_value_seed(ValueVisitor { depth: inner.depth })?;
            m.insert(key, value);
        }
        let m = m.finish();
        if top {
            TOP_KEYS.set(m.len());
        }
        Ok(Value::Object(m))
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor { depth: 0 })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(depth: usize) -> String {
        format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn from_json_takes_128_levels_and_refuses_the_129th() {
        assert!(from_json(nested(128).as_bytes()).is_ok());
        let objects = format!("{}1{}", r#"{"a":"#.repeat(128), "}".repeat(128));
        assert!(from_json(objects.as_bytes()).is_ok());
        for deep in [
            nested(129),
            format!("{{\"a\":{}}}", nested(128)),
            nested(1_000_000),
        ] {
            let e = from_json(deep.as_bytes()).unwrap_err();
            assert!(
                e.to_string()
                    .starts_with("nesting deeper than 128 levels at line 1 column"),
                "{e}"
            );
        }
        assert!(
            from_json(b"{} x").is_err(),
            "trailing characters are refused"
        );
        assert_eq!(
            from_json(b" [1, {\"a\": null}] ").unwrap().to_string(),
            r#"[1,{"a":null}]"#
        );
    }

    /// How many of `inputs` the fast decoder takes, asserting that each
    /// it takes decodes to what serde_json gives.
    fn agree_with_serde_json(inputs: impl Iterator<Item = Vec<u8>>) -> usize {
        let (mut accepted, mut differ) = (0, Vec::new());
        for input in inputs {
            let exact = from_json_exact(&input).ok().map(|v| v.to_string());
            if let Some(fast) = super::super::json_fast::parse(&input) {
                accepted += 1;
                if exact.as_deref() != Some(fast.to_string().as_str()) {
                    let input = String::from_utf8_lossy(&input).into_owned();
                    differ.push((input, fast.to_string(), exact));
                }
            }
        }
        assert!(
            differ.is_empty(),
            "{} differ (input, fast, exact): {:?}",
            differ.len(),
            &differ[..differ.len().min(10)]
        );
        accepted
    }

    /// Inputs where JSON parsers commonly disagree: the fast path must
    /// give serde_json's value or leave the input to it.
    #[test]
    fn the_fast_path_agrees_with_serde_json() {
        let mut inputs: Vec<Vec<u8>> = [
            r#"{"a":1}"#,
            r#"{"a":-0}"#,
            "-0.0",
            "0",
            "01",
            "+1",
            ".5",
            "1.",
            "1e400",
            "-1e400",
            "1e-400",
            "18446744073709551615",
            "18446744073709551616",
            "-9223372036854775808",
            "-9223372036854775809",
            "123456789012345678901234567890",
            "1.7976931348623157e308",
            "2.2250738585072014e-308",
            "5e-324",
            "0.1",
            "13.4",
            "1E2",
            "1e+2",
            "NaN",
            "Infinity",
            "-",
            "[1,]",
            r#"{"a":1,}"#,
            "[1 2]",
            r#"{"a" 1}"#,
            "//c\n1",
            "/*c*/1",
            "\u{feff}{}",
            " \t\r\n{} \n",
            "\u{b}{}",
            "\u{c}{}",
            "{}x",
            "{} {}",
            r#""\ud800""#,
            r#""\udc00""#,
            r#""\ud83d\ude00""#,
            r#""\u0000""#,
            "\"\u{1}\"",
            "\"\t\"",
            r#""\x""#,
            r#""\/""#,
            r#""\u00e9""#,
            "\"é\"",
            r#"{"a":1,"a":2}"#,
            r#"{"":""}"#,
            "[]",
            "{}",
            "null",
            "true",
            "tru",
            "nul",
            "[[[[]]]]",
            r#"{"k":{"k":{"k":[1,{"x":null}]}}}"#,
            "\"",
            "",
            r#"{"a":"b""#,
            r#""abc"#,
            "[1e5, 1E-5, 0.0000001, 1234567.890123]",
        ]
        .iter()
        .map(|s| s.as_bytes().to_vec())
        .collect();
        inputs.push(b"\"\xff\"".to_vec());
        inputs.push(b"{\"\xc3\x28\":1}".to_vec());
        inputs.push(b"\"\xed\xa0\x80\"".to_vec());
        inputs.push(b"\"\xf4\x90\x80\x80\"".to_vec());
        inputs.push(nested(128).into_bytes());
        inputs.push(nested(129).into_bytes());
        inputs.push(format!("{}1{}", r#"{"a":"#.repeat(129), "}".repeat(129)).into_bytes());
        // Floats printed every way they are written.
        let mut rng = 0x9e37_79b9_7f4a_7c15_u64;
        for _ in 0..20_000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let f = f64::from_bits(rng);
            if f.is_finite() {
                inputs.push(format!("{f}").into_bytes());
                inputs.push(format!("{f:e}").into_bytes());
                inputs.push(format!("{:.3}", f / 1e300).into_bytes());
            }
            inputs.push(format!("{}", rng as i64).into_bytes());
            inputs.push(format!("{}.{}", rng % 100_000, rng % 1000).into_bytes());
        }
        let fast_accepted = agree_with_serde_json(inputs.iter().cloned());
        assert!(
            fast_accepted > inputs.len() / 2,
            "the fast path takes most inputs"
        );
    }

    /// Events as they arrive, each cut, spliced and flipped at random: the
    /// fast decoder must give serde_json's value or leave the input to it.
    #[test]
    fn mutated_events_decode_as_serde_json_does() {
        let seeds: [&[u8]; 4] = [
            br#"{"ts":"2026-11-27T12:00:00.002Z","host":"web-05","status":200,"latency_ms":13.4,"ok":true,"tags":["a",null,-1.5e3],"msg":"say \"hi\"\n\u00e9\ud83d\ude00"}"#,
            br#" { "a" : [ 1 , { "b" : { } } , [ ] ] , "c" : -0.0 , "d" : 18446744073709551615 } "#,
            r#"{"ünï":"çødé ✓","n":-9223372036854775808,"e":1E-7,"z":0}"#.as_bytes(),
            br#"[{"k":"\/\b\f\r\t"},"",0.1,12345678901234567890,false]"#,
        ];
        let pieces: [&[u8]; 16] = [
            b"\"", b"\\", b"{", b"}", b"[", b"]", b",", b":", b"-", b"0", b"e", b".", b"\\u",
            b"\xc3", b"\x01", b" ",
        ];
        let mut rng = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let inputs = (0..40_000).map(|round| {
            let mut input = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next(3) {
                let at = next(input.len() + 1);
                match next(3) {
                    0 => {
                        let piece = pieces[next(pieces.len())];
                        input.splice(at..at, piece.iter().copied());
                    }
                    1 if at < input.len() => {
                        input.remove(at);
                    }
                    _ if at < input.len() => input[at] = input[at].wrapping_add(1 + next(3) as u8),
                    _ => {}
                }
            }
            input
        });
        let accepted = agree_with_serde_json(inputs);
        assert!(
            accepted > 2_000,
            "the mutations leave many inputs valid: {accepted}"
        );
        for seed in seeds {
            let fast = super::super::json_fast::parse(seed).map(|v| v.to_string());
            assert_eq!(fast, from_json_exact(seed).ok().map(|v| v.to_string()));
            assert!(
                fast.is_some() || seed.starts_with(b" {"),
                "{}",
                String::from_utf8_lossy(seed)
            );
        }
    }

    #[test]
    fn round_trips_json_keeping_key_order_and_last_duplicate() {
        let v: Value = serde_json::from_str(
            r#"{"b":1,"a":[true,null,"x",1.5],"b":2,"long key that does not fit inline":{}}"#,
        )
        .unwrap();
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"b":2,"a":[true,null,"x",1.5],"long key that does not fit inline":{}}"#
        );
    }
}
