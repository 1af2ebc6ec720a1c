//! A JSON decoder straight into `Value`, for the bytes events arrive as.
//!
//! serde's visitor protocol costs more than the parsing itself: through it
//! sonic-rs took ~7,000 instructions for a 190-byte reference event, most
//! of them in per-token calls, result plumbing and its input abstraction.
//! Here a token is one `match` on a byte, strings are scanned eight bytes at
//! a time, and values are built where they are read (~2,000 for the same
//! event).
//!
//! It only ever agrees with serde_json: wherever it is not certain — any
//! syntax error, a number serde_json would read its own way (an integer
//! over `u64`, a float that overflows or underflows to zero), a lone
//! surrogate — it returns `None` and the caller asks serde_json, whose
//! value or error (with line and column) is the answer. `serde_impl`'s
//! tests check the two agree on ~100,000 inputs where parsers differ.

use super::map::{Builder, same_key};
use super::serde_impl::{MAX_NESTING, ROOM_FOR_NEW_KEYS, TOP_KEYS};
use super::{Map, Number, Str, Value};

/// `bytes` as one JSON value, or `None` to leave them to serde_json.
pub(super) fn parse(bytes: &[u8]) -> Option<Value> {
    // Validated once for the whole input (serde_json refuses invalid UTF-8
    // in strings, and any non-ASCII byte outside one is a syntax error), so
    // strings are slices of it: their quotes are ASCII, hence char
    // boundaries. Per string, validation was a fifth of decoding.
    let text = std::str::from_utf8(bytes).ok()?;
    let mut p = Parser {
        s: text,
        b: bytes,
        i: 0,
    };
    p.skip_ws();
    let v = p.value(0)?;
    p.skip_ws();
    (p.i == bytes.len()).then_some(v)
}

struct Parser<'a> {
    s: &'a str,
    /// `s` as bytes.
    b: &'a [u8],
    i: usize,
}

thread_local! {
    /// The keys of the last event decoded on this thread, up to the first
    /// that JSON would need to escape. Events of one stream share their
    /// keys: a key that matches is cloned (an inline copy) instead of
    /// scanned and built, and needs no duplicate check (~10 % of decoding).
    static LAST_KEYS: std::cell::Cell<Vec<Str>> = const { std::cell::Cell::new(Vec::new()) };
}

/// `m`'s keys, up to the first that is not plain.
fn plain_keys(m: &Map) -> Vec<Str> {
    m.keys()
        .take_while(|k| !k.bytes().any(stops_string) && k.len() <= 24)
        .cloned()
        .collect()
}

/// Bytes that end a run of plain string bytes: `"`, `\` and the control
/// characters JSON forbids raw.
#[inline(always)]
fn stops_string(c: u8) -> bool {
    c == b'"' || c == b'\\' || c < 0x20
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` (little-endian) that stop a string, as their high bits.
/// A borrow can flag a byte above a real stop, never below one, so the
/// lowest flag is exact.
#[inline(always)]
fn stops_in_word(w: u64) -> u64 {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x;
    (zero(w ^ (ONES * b'"' as u64))
        | zero(w ^ (ONES * b'\\' as u64))
        | (w.wrapping_sub(ONES * 0x20) & !w))
        & HIGH
}

impl Parser<'_> {
    #[inline(always)]
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    #[inline(always)]
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.peek() {
            self.i += 1;
        }
    }

    #[inline(always)]
    fn eat(&mut self, c: u8) -> Option<()> {
        self.skip_ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// A value starting at `self.i` (whitespace skipped); `depth` is how
    /// many arrays and objects enclose it.
    fn value(&mut self, depth: u32) -> Option<Value> {
        Some(match self.peek()? {
            b'"' => Value::String(self.string()?),
            b'{' => self.object(depth)?,
            b'[' => self.array(depth)?,
            b't' => self.literal(b"true", Value::Bool(true))?,
            b'f' => self.literal(b"false", Value::Bool(false))?,
            b'n' => self.literal(b"null", Value::Null)?,
            b'-' | b'0'..=b'9' => Value::Number(self.number()?),
            _ => return None,
        })
    }

    fn literal(&mut self, word: &[u8], v: Value) -> Option<Value> {
        let end = self.i + word.len();
        (self.b.get(self.i..end)? == word).then(|| {
            self.i = end;
            v
        })
    }

    fn object(&mut self, depth: u32) -> Option<Value> {
        if depth >= MAX_NESTING {
            return None;
        }
        self.i += 1;
        let capacity = if depth == 0 {
            TOP_KEYS.get() + ROOM_FOR_NEW_KEYS
        } else {
            8
        };
        // Duplicate keys: the last one wins, at the first one's place (jq).
        let mut m = Builder::new(Map::with_capacity(capacity.min(1024)));
        // The last event's keys, while this one's match them in order.
        let known = if depth == 0 {
            LAST_KEYS.take()
        } else {
            Vec::new()
        };
        let mut matched = 0;
        self.skip_ws();
        if self.peek()? == b'}' {
            self.i += 1;
        } else {
            loop {
                self.skip_ws();
                if self.peek()? != b'"' {
                    return None;
                }
                let known_key = known.get(matched).filter(|k| self.at_key(k));
                let key = match known_key {
                    Some(k) => {
                        self.i += k.len() + 2;
                        k.clone()
                    }
                    None => self.string()?,
                };
                self.eat(b':')?;
                self.skip_ws();
                let value = self.value(depth + 1)?;
                if known_key.is_some() {
                    matched += 1;
                    m.push_new(key, value);
                } else {
                    if matched != usize::MAX {
                        matched = usize::MAX;
                        m.resume();
                    }
                    m.insert(key, value);
                }
                self.skip_ws();
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let m = m.finish();
        if depth == 0 {
            TOP_KEYS.set(m.len());
            LAST_KEYS.set(if matched == known.len() && matched == m.len() {
                known
            } else {
                plain_keys(&m)
            });
        }
        Some(Value::Object(m))
    }

    /// Whether the string at `self.i` is exactly `key` (a plain key:
    /// nothing in it that JSON escapes, so equal bytes mean equal strings).
    #[inline(always)]
    fn at_key(&self, key: &Str) -> bool {
        let k = key.as_bytes();
        let start = self.i + 1;
        self.b.get(start + k.len()) == Some(&b'"') && same_key(&self.b[start..start + k.len()], k)
    }

    fn array(&mut self, depth: u32) -> Option<Value> {
        if depth >= MAX_NESTING {
            return None;
        }
        self.i += 1;
        let mut items = Vec::with_capacity(4);
        self.skip_ws();
        if self.peek()? == b']' {
            self.i += 1;
            return Some(Value::Array(items));
        }
        loop {
            self.skip_ws();
            items.push(self.value(depth + 1)?);
            self.skip_ws();
            match self.peek()? {
                b',' => self.i += 1,
                b']' => {
                    self.i += 1;
                    return Some(Value::Array(items));
                }
                _ => return None,
            }
        }
    }

    /// The index of the next byte from `at` that stops a string run.
    #[inline(always)]
    fn run_end(&self, mut at: usize) -> Option<usize> {
        while let Some(chunk) = self.b.get(at..at + 8) {
            let w = u64::from_le_bytes(chunk.try_into().ok()?);
            let stops = stops_in_word(w);
            if stops != 0 {
                return Some(at + (stops.trailing_zeros() / 8) as usize);
            }
            at += 8;
        }
        while !stops_string(*self.b.get(at)?) {
            at += 1;
        }
        Some(at)
    }

    /// A string starting at its opening quote.
    fn string(&mut self) -> Option<Str> {
        let start = self.i + 1;
        let end = self.run_end(start)?;
        if self.b[end] == b'"' {
            self.i = end + 1;
            return Some(Str::new(self.s.get(start..end)?));
        }
        self.escaped_string(start, end)
    }

    /// The rest of a string whose run from `start` stopped at `at` on
    /// something other than its closing quote.
    #[cold]
    fn escaped_string(&mut self, start: usize, mut at: usize) -> Option<Str> {
        let mut out = String::from(self.s.get(start..at)?);
        loop {
            match self.b[at] {
                b'"' => {
                    self.i = at + 1;
                    return Some(Str::from(out));
                }
                b'\\' => {
                    let (c, next) = self.escape(at + 1)?;
                    out.push(c);
                    at = next;
                }
                _ => return None, // a raw control character
            }
            let end = self.run_end(at)?;
            out.push_str(self.s.get(at..end)?);
            at = end;
        }
    }

    /// The character an escape after a backslash at `at - 1` stands for,
    /// and where the string goes on. A surrogate must come in a pair.
    fn escape(&self, at: usize) -> Option<(char, usize)> {
        let simple = match *self.b.get(at)? {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4(at + 1)?;
                if !(0xD800..0xE000).contains(&high) {
                    return Some((char::from_u32(high)?, at + 5));
                }
                if high >= 0xDC00 || self.b.get(at + 5..at + 7)? != b"\\u" {
                    return None;
                }
                let low = self.hex4(at + 7)?;
                if !(0xDC00..0xE000).contains(&low) {
                    return None;
                }
                let c = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                return Some((char::from_u32(c)?, at + 11));
            }
            _ => return None,
        };
        Some((simple, at + 1))
    }

    fn hex4(&self, at: usize) -> Option<u32> {
        let digits = self.b.get(at..at + 4)?;
        digits
            .iter()
            .try_fold(0, |n, d| Some(n << 4 | (*d as char).to_digit(16)?))
    }

    /// A number, as serde_json reads it: integers as `u64`/`i64`, the rest
    /// as the nearest `f64` (std's parser rounds correctly, as serde_json's
    /// `float_roundtrip` does).
    fn number(&mut self) -> Option<Number> {
        let start = self.i;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.i += 1;
        }
        let int_start = self.i;
        let mut n: u64 = 0;
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => {
                while let Some(d @ b'0'..=b'9') = self.peek() {
                    // Past u64, serde_json reads the digits as a float: its way.
                    n = n.checked_mul(10)?.checked_add((d - b'0') as u64)?;
                    self.i += 1;
                }
            }
            _ => return None,
        }
        let mut float = false;
        if self.peek() == Some(b'.') {
            self.i += 1;
            float = true;
            self.digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            float = true;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.digits()?;
        }
        if !float {
            return Some(match (negative, n) {
                (false, n) => n.into(),
                // serde_json reads `-0` as the float -0.0.
                (true, 0) => Number::from_f64(-0.0)?,
                (true, n) if n <= 1 << 63 => (n as i64).wrapping_neg().into(),
                (true, _) => return None,
            });
        }
        let f: f64 = self.s.get(start..self.i)?.parse().ok()?;
        // An overflow is an error to serde_json; leave any zero or
        // subnormal from non-zero digits (an underflow) to it too.
        let nonzero_digits = self.b[int_start..self.i]
            .iter()
            .take_while(|c| !matches!(c, b'e' | b'E'))
            .any(|c| matches!(c, b'1'..=b'9'));
        if !f.is_finite() || (f.abs() < f64::MIN_POSITIVE && nonzero_digits) {
            return None;
        }
        Number::from_f64(f)
    }

    fn digits(&mut self) -> Option<()> {
        let start = self.i;
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
        (self.i > start).then_some(())
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    /// Events decoded in turn on one thread, so each is read against the
    /// last one's keys: the same keys, one more, one fewer, reordered,
    /// duplicated, escaped, nested, long.
    #[test]
    fn the_last_events_keys_never_change_what_an_event_decodes_to() {
        let events = [
            r#"{"a":1,"b":2}"#,
            r#"{"a":1,"b":2}"#,
            r#"{"a":1,"a":3,"b":2}"#,
            r#"{"a":1,"b":2,"b":3}"#,
            r#"{"b":1,"a":2}"#,
            r#"{"a":1}"#,
            r#"{"a":1,"b":2,"c":3}"#,
            r#"{"a\"b":1,"c":2}"#,
            r#"{"a\"b":1,"c":2}"#,
            r#"{"ab":1}"#,
            r#"{"a\u0062":1}"#,
            r#"{"ab" : 1 , "c":{"ab":2}}"#,
            r#"{"a":1,"b":2,"c":3}"#,
            r#"{"a":1,"b":2,"c":3,"d":4}"#,
            r#"{"a":1,"bb":2}"#,
            r#"{"a":1,"b":2,"c"}"#,
            r#"{"a":1,"b":2}"#,
            r#"{"a long key that is not stored inline":1,"a":2}"#,
            r#"{"a long key that is not stored inline":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
            r#"{"a":1,"a":2}"#,
        ];
        for e in events {
            let exact: Option<serde_json::Value> = serde_json::from_str(e).ok();
            let fast = parse(e.as_bytes()).map(|v| v.to_string());
            assert_eq!(fast, exact.map(|v| v.to_string()), "{e}");
        }
    }
}
