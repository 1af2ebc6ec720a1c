//! Durations written with a unit (`250ms`, `2s`, `1m`, `1h`), parsed with
//! `humantime` so compound forms like `1m30s` work too.

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::time::Duration;

/// A duration in pipeline files: a number with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConfigDuration(pub Duration);

impl ConfigDuration {
    pub fn parse(text: &str) -> Result<Self, String> {
        let trimmed = text.trim();
        if trimmed.chars().all(|c| c.is_ascii_digit() || c == '.') && !trimmed.is_empty() {
            return Err(format!(
                "duration '{text}' needs a unit, e.g. '{trimmed}s' or '{trimmed}ms'"
            ));
        }
        humantime::parse_duration(trimmed)
            .map(ConfigDuration)
            .map_err(|e| format!("invalid duration '{text}': {e} (examples: 250ms, 2s, 1m, 1h)"))
    }
}

impl<'de> Deserialize<'de> for ConfigDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Number(f64),
        }
        match Raw::deserialize(d)? {
            Raw::Text(text) => Self::parse(&text).map_err(serde::de::Error::custom),
            Raw::Number(n) => Err(serde::de::Error::custom(format!(
                "duration {n} needs a unit, e.g. '{n}s' or '{n}ms'"
            ))),
        }
    }
}

impl Serialize for ConfigDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl JsonSchema for ConfigDuration {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Duration".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "pattern": "^([0-9]+(\\.[0-9]+)?\\s*(ns|us|ms|s|m|h|d)\\s*)+$",
            "description": "A duration with a unit: 250ms, 2s, 1m, 1h (compound forms like 1m30s work too).",
            "examples": ["250ms", "2s", "1m"]
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_rejects_bare_numbers() {
        assert_eq!(
            ConfigDuration::parse("250ms").unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            ConfigDuration::parse("1m").unwrap().0,
            Duration::from_secs(60)
        );
        assert_eq!(
            ConfigDuration::parse("1h").unwrap().0,
            Duration::from_secs(3600)
        );
        assert!(
            ConfigDuration::parse("5")
                .unwrap_err()
                .contains("needs a unit")
        );
        assert!(ConfigDuration::parse("5 parsecs").is_err());
    }
}
