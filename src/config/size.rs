//! Sizes in pipeline files: plain bytes (`65536`) or a number with a
//! binary unit (`512KiB`, `64MiB`, `2GiB`).

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A size in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ByteSize(pub u64);

const UNITS: [(&str, u64); 4] = [
    ("GiB", 1 << 30),
    ("MiB", 1 << 20),
    ("KiB", 1 << 10),
    ("B", 1),
];

impl ByteSize {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        let (digits, scale) = UNITS
            .iter()
            .find_map(|(unit, scale)| Some((trimmed.strip_suffix(unit)?.trim_end(), *scale)))
            .unwrap_or((trimmed, 1));
        let hint = "examples: 65536, 512KiB, 64MiB, 2GiB";
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("invalid size '{text}' ({hint})"));
        }
        digits
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .map(ByteSize)
            .ok_or_else(|| format!("size '{text}' is too large"))
    }

    pub fn bytes(self) -> usize {
        usize::try_from(self.0).unwrap_or(usize::MAX)
    }
}

impl std::fmt::Display for ByteSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match UNITS
            .iter()
            .find(|(_, s)| *s > 1 && self.0 >= *s && self.0.is_multiple_of(*s))
        {
            Some((unit, scale)) => write!(f, "{}{unit}", self.0 / scale),
            None => write!(f, "{}", self.0),
        }
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(ByteSize(n)),
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for ByteSize {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl JsonSchema for ByteSize {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ByteSize".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "A size: plain bytes, or a number with KiB, MiB or GiB.",
            "oneOf": [
                {"type": "integer", "minimum": 0},
                {"type": "string", "pattern": "^\\s*[0-9]+\\s*(B|KiB|MiB|GiB)?\\s*$"}
            ],
            "examples": [65536, "512KiB", "64MiB", "2GiB"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_bytes_and_binary_units() {
        let cases = [
            ("65536", 65536),
            ("512KiB", 512 << 10),
            ("64 MiB", 64 << 20),
            ("2GiB", 2 << 30),
            ("10B", 10),
        ];
        for (text, bytes) in cases {
            assert_eq!(ByteSize::parse(text), Ok(ByteSize(bytes)), "{text}");
        }
        for bad in ["", "MiB", "1.5GiB", "2GB", "-1", "lots"] {
            assert!(ByteSize::parse(bad).is_err(), "{bad}");
        }
        assert!(ByteSize::parse("99999999999GiB").is_err());
        assert_eq!(ByteSize(2 << 30).to_string(), "2GiB");
        assert_eq!(ByteSize(1000).to_string(), "1000");
        let v: ByteSize = serde_yaml::from_str("1048576").unwrap();
        assert_eq!(v.to_string(), "1MiB");
    }
}
