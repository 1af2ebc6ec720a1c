//! Typed values for the `postgres` sink: an event value converted to the
//! type of its column (looked up from the table at start) and appended, in
//! PostgreSQL's binary format, to one array per column. A batch is sent as
//! one array parameter per column (`INSERT ... SELECT * FROM unnest(...)`),
//! so the hot path writes into a few growing buffers and allocates nothing
//! per value.

use crate::core::Value;
use bytes::BytesMut;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// The column types the sink converts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Bool,
    Int2,
    Int4,
    Int8,
    Float4,
    Float8,
    Numeric,
    Text,
    Json,
    Jsonb,
    Uuid,
    Timestamptz,
    Timestamp,
    Date,
}

impl Kind {
    /// The kind of a column type and its array type, or `None` for a type
    /// the sink does not convert to.
    pub fn of(ty: &Type) -> Option<(Kind, Type)> {
        Some(match *ty {
            Type::BOOL => (Kind::Bool, Type::BOOL_ARRAY),
            Type::INT2 => (Kind::Int2, Type::INT2_ARRAY),
            Type::INT4 => (Kind::Int4, Type::INT4_ARRAY),
            Type::INT8 => (Kind::Int8, Type::INT8_ARRAY),
            Type::FLOAT4 => (Kind::Float4, Type::FLOAT4_ARRAY),
            Type::FLOAT8 => (Kind::Float8, Type::FLOAT8_ARRAY),
            Type::NUMERIC => (Kind::Numeric, Type::NUMERIC_ARRAY),
            Type::TEXT => (Kind::Text, Type::TEXT_ARRAY),
            Type::VARCHAR => (Kind::Text, Type::VARCHAR_ARRAY),
            Type::BPCHAR => (Kind::Text, Type::BPCHAR_ARRAY),
            Type::JSON => (Kind::Json, Type::JSON_ARRAY),
            Type::JSONB => (Kind::Jsonb, Type::JSONB_ARRAY),
            Type::UUID => (Kind::Uuid, Type::UUID_ARRAY),
            Type::TIMESTAMPTZ => (Kind::Timestamptz, Type::TIMESTAMPTZ_ARRAY),
            Type::TIMESTAMP => (Kind::Timestamp, Type::TIMESTAMP_ARRAY),
            Type::DATE => (Kind::Date, Type::DATE_ARRAY),
            _ => return None,
        })
    }
}

/// The types the sink converts to, for the error naming an unsupported one.
pub const SUPPORTED: &str = "boolean, smallint, integer, bigint, real, double precision, numeric, \
     text, varchar, char, json, jsonb, uuid, timestamptz, timestamp, date";

/// One column's values for a batch, as the body of a binary array.
pub struct ColumnArray {
    kind: Kind,
    elem: Type,
    len: i32,
    has_null: bool,
    body: BytesMut,
}

impl ColumnArray {
    pub fn new(kind: Kind, elem: Type, capacity: usize) -> Self {
        Self {
            kind,
            elem,
            len: 0,
            has_null: false,
            body: BytesMut::with_capacity(capacity * 12),
        }
    }

    /// Where the next value starts, to undo a row whose later column fails.
    pub fn mark(&self) -> (usize, i32, bool) {
        (self.body.len(), self.len, self.has_null)
    }

    pub fn reset_to(&mut self, (bytes, len, has_null): (usize, i32, bool)) {
        self.body.truncate(bytes);
        self.len = len;
        self.has_null = has_null;
    }

    /// Appends `value` (absent: NULL) converted to the column's type.
    pub fn push(&mut self, value: Option<&Value>) -> Result<(), String> {
        let value = match value {
            None | Some(Value::Null) => {
                self.body.extend_from_slice(&(-1i32).to_be_bytes());
                self.has_null = true;
                self.len += 1;
                return Ok(());
            }
            Some(v) => v,
        };
        let at = self.body.len();
        self.body.extend_from_slice(&[0; 4]);
        if let Err(e) = encode(self.kind, value, &mut self.body) {
            self.body.truncate(at);
            return Err(e);
        }
        let size = (self.body.len() - at - 4) as i32;
        self.body[at..at + 4].copy_from_slice(&size.to_be_bytes());
        self.len += 1;
        Ok(())
    }
}

impl std::fmt::Debug for ColumnArray {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ColumnArray({:?}, {} values)", self.kind, self.len)
    }
}

impl ToSql for ColumnArray {
    fn to_sql(
        &self,
        _: &Type,
        out: &mut BytesMut,
    ) -> Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        // One dimension of `len` values, lower bound 1 (`array_send`).
        out.reserve(20 + self.body.len());
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&i32::from(self.has_null).to_be_bytes());
        out.extend_from_slice(&self.elem.oid().to_be_bytes());
        out.extend_from_slice(&self.len.to_be_bytes());
        out.extend_from_slice(&1i32.to_be_bytes());
        out.extend_from_slice(&self.body);
        Ok(IsNull::No)
    }

    fn accepts(_: &Type) -> bool {
        // The statement is prepared with the array types these were made for.
        true
    }

    to_sql_checked!();
}

fn cannot(v: &Value, to: &str) -> String {
    let shown = v.to_string();
    let shown = match shown.char_indices().nth(64) {
        Some((i, _)) => format!("{}...", &shown[..i]),
        None => shown,
    };
    format!(
        "cannot convert {} {shown} to {to}",
        crate::expr::value::type_name(v)
    )
}

fn integer(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.fract() == 0.0 && f.abs() < 9.2e18)
                .map(|f| f as i64)
        }),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01).
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// An RFC 3339 string or epoch seconds, as microseconds since 2000-01-01 UTC.
fn timestamp_micros(v: &Value) -> Option<i64> {
    let unix_micros = match v {
        Value::String(s) => s.parse::<jiff::Timestamp>().ok()?.as_microsecond(),
        Value::Number(n) => {
            let secs = n.as_f64()?;
            if !secs.is_finite() || secs.abs() > 9.2e12 {
                return None;
            }
            (secs * 1e6).round() as i64
        }
        _ => return None,
    };
    Some(unix_micros - PG_EPOCH_MICROS)
}

fn encode(kind: Kind, v: &Value, out: &mut BytesMut) -> Result<(), String> {
    match kind {
        Kind::Bool => {
            let b = match v {
                Value::Bool(b) => *b,
                Value::String(s) if s.as_str() == "true" => true,
                Value::String(s) if s.as_str() == "false" => false,
                _ => return Err(cannot(v, "boolean")),
            };
            out.extend_from_slice(&[u8::from(b)]);
        }
        Kind::Int2 => {
            let n = integer(v).and_then(|n| i16::try_from(n).ok());
            out.extend_from_slice(&n.ok_or_else(|| cannot(v, "smallint"))?.to_be_bytes());
        }
        Kind::Int4 => {
            let n = integer(v).and_then(|n| i32::try_from(n).ok());
            out.extend_from_slice(&n.ok_or_else(|| cannot(v, "integer"))?.to_be_bytes());
        }
        Kind::Int8 => {
            out.extend_from_slice(&integer(v).ok_or_else(|| cannot(v, "bigint"))?.to_be_bytes())
        }
        Kind::Float4 => {
            let f = float(v).ok_or_else(|| cannot(v, "real"))? as f32;
            out.extend_from_slice(&f.to_be_bytes());
        }
        Kind::Float8 => {
            let f = float(v).ok_or_else(|| cannot(v, "double precision"))?;
            out.extend_from_slice(&f.to_be_bytes());
        }
        Kind::Numeric => {
            let text = match v {
                Value::Number(n) => n.to_string(),
                Value::String(s) => s.trim().to_string(),
                _ => return Err(cannot(v, "numeric")),
            };
            numeric(&text, out).ok_or_else(|| cannot(v, "numeric"))?;
        }
        Kind::Text => match v {
            Value::String(s) => out.extend_from_slice(s.as_bytes()),
            // Other values as their JSON text, as the kafka sink's keys.
            other => json(other, out),
        },
        Kind::Json => json(v, out),
        Kind::Jsonb => {
            // jsonb_send's version byte, then the text.
            out.extend_from_slice(&[1]);
            json(v, out);
        }
        Kind::Uuid => {
            let bytes = v.as_str().and_then(uuid).ok_or_else(|| cannot(v, "uuid"))?;
            out.extend_from_slice(&bytes);
        }
        Kind::Timestamptz | Kind::Timestamp => {
            let micros = timestamp_micros(v)
                .ok_or_else(|| cannot(v, "a timestamp (RFC 3339 or epoch seconds)"))?;
            out.extend_from_slice(&micros.to_be_bytes());
        }
        Kind::Date => {
            let date = v
                .as_str()
                .and_then(|s| s.parse::<jiff::civil::Date>().ok())
                .ok_or_else(|| cannot(v, "date (YYYY-MM-DD)"))?;
            let epoch = jiff::civil::date(2000, 1, 1);
            let days = (date - epoch).get_days();
            out.extend_from_slice(&days.to_be_bytes());
        }
    }
    Ok(())
}

/// Writes `v` as JSON straight into the column (no string per value).
fn json(v: &Value, out: &mut BytesMut) {
    // Serialising a Value into memory cannot fail.
    let _ = serde_json::to_writer(bytes::BufMut::writer(&mut *out), v);
}

/// `8-4-4-4-12` hex (hyphens optional, braces allowed) as 16 bytes.
fn uuid(s: &str) -> Option<[u8; 16]> {
    let s = s.trim().trim_start_matches('{').trim_end_matches('}');
    let mut out = [0u8; 16];
    let mut digits = s.bytes().filter(|&b| b != b'-');
    for byte in &mut out {
        let hi = (digits.next()? as char).to_digit(16)?;
        let lo = (digits.next()? as char).to_digit(16)?;
        *byte = (hi * 16 + lo) as u8;
    }
    (digits.next().is_none() && s.len() >= 32).then_some(out)
}

/// A decimal number (`-12.5`, `3e4`) in `numeric_send` format: base-10000
/// digits with the weight of the first and the display scale.
fn numeric(text: &str, out: &mut BytesMut) -> Option<()> {
    if text.eq_ignore_ascii_case("nan") {
        out.extend_from_slice(&[0, 0, 0, 0, 0xC0, 0, 0, 0]);
        return Some(());
    }
    let (negative, body) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let (mantissa, exp) = match body.find(['e', 'E']) {
        Some(i) => (&body[..i], body[i + 1..].parse::<i32>().ok()?),
        None => (body, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int_part.is_empty() && frac_part.is_empty()
        || !int_part
            .bytes()
            .chain(frac_part.bytes())
            .all(|b| b.is_ascii_digit())
        || exp.abs() > 1000
    {
        return None;
    }
    // All decimal digits, and where the point is among them.
    let digits: Vec<u8> = int_part
        .bytes()
        .chain(frac_part.bytes())
        .map(|b| b - b'0')
        .collect();
    let point = int_part.len() as i32 + exp;
    let scale = (frac_part.len() as i32 - exp).max(0) as u16;
    // Pad so that the point falls on a base-10000 group boundary.
    let lead = (4 - point.rem_euclid(4)) % 4;
    let mut padded = vec![0u8; lead as usize];
    padded.extend_from_slice(&digits);
    while !padded.len().is_multiple_of(4) {
        padded.push(0);
    }
    let mut groups: Vec<i16> = padded
        .chunks(4)
        .map(|c| c.iter().fold(0i16, |acc, d| acc * 10 + i16::from(*d)))
        .collect();
    let mut weight = (point + lead) / 4 - 1;
    while groups.first() == Some(&0) {
        groups.remove(0);
        weight -= 1;
    }
    while groups.last() == Some(&0) {
        groups.pop();
    }
    if groups.is_empty() {
        weight = 0;
    }
    let sign: u16 = if negative && !groups.is_empty() {
        0x4000
    } else {
        0
    };
    out.extend_from_slice(&(groups.len() as i16).to_be_bytes());
    out.extend_from_slice(&(weight as i16).to_be_bytes());
    out.extend_from_slice(&sign.to_be_bytes());
    out.extend_from_slice(&scale.to_be_bytes());
    for g in groups {
        out.extend_from_slice(&g.to_be_bytes());
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numeric_parts(text: &str) -> Vec<i16> {
        let mut out = BytesMut::new();
        numeric(text, &mut out).unwrap();
        out.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numerics_are_base_10000_groups_with_weight_and_scale() {
        // [ndigits, weight, sign, dscale, digits...]
        assert_eq!(numeric_parts("12345.678"), vec![3, 1, 0, 3, 1, 2345, 6780]);
        assert_eq!(numeric_parts("-0.5"), vec![1, -1, 0x4000, 1, 5000]);
        assert_eq!(numeric_parts("0"), vec![0, 0, 0, 0]);
        assert_eq!(numeric_parts("1e4"), vec![1, 1, 0, 0, 1]);
        assert_eq!(numeric_parts("100"), vec![1, 0, 0, 0, 100]);
        assert!(numeric("1.2.3", &mut BytesMut::new()).is_none());
        assert!(numeric("abc", &mut BytesMut::new()).is_none());
    }

    #[test]
    fn uuids_and_timestamps_convert() {
        assert_eq!(
            uuid("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11").unwrap()[..3],
            [0xa0, 0xee, 0xbc]
        );
        assert!(uuid("a0eebc99").is_none());
        assert!(uuid("zzeebc99-9c0b-4ef8-bb6d-6bb9bd380a11").is_none());
        let at = Value::String("2000-01-01T00:00:01Z".into());
        assert_eq!(timestamp_micros(&at), Some(1_000_000));
        let epoch = Value::Number(crate::core::Number::from_f64(946_684_800.5).unwrap());
        assert_eq!(timestamp_micros(&epoch), Some(500_000));
    }

    #[test]
    fn a_value_that_does_not_convert_leaves_the_column_as_it_was() {
        let mut col = ColumnArray::new(Kind::Int4, Type::INT4, 4);
        col.push(Some(&Value::Number(7.into()))).unwrap();
        let err = col.push(Some(&Value::String("seven".into()))).unwrap_err();
        assert_eq!(err, "cannot convert string \"seven\" to integer");
        assert_eq!(col.len, 1);
        assert!(col.push(Some(&Value::Number(i64::MAX.into()))).is_err());
        col.push(None).unwrap();
        assert_eq!((col.len, col.has_null), (2, true));
    }
}
