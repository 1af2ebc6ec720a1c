//! The pipeline JSON Schema, generated from the config types (their `///`
//! docs become descriptions). Each component type is one `oneOf` branch:
//! its shared keys and its own keys merged into one closed object, so
//! editors complete and check both.

use crate::components::{SinkKind, SourceKind, TransformKind};
use crate::config::controls::{SourceCommon, StageCommon};
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

const NAME_PATTERN: &str = "^[a-z][a-z0-9_]*$";

fn object(schema: schemars::Schema) -> Map<String, Value> {
    match schema.to_value() {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

fn variants(
    generator: &mut SchemaGenerator,
    shared: Map<String, Value>,
    types: Vec<(&'static str, schemars::Schema)>,
) -> Value {
    let branches: Vec<Value> = types
        .into_iter()
        .map(|(tag, schema)| {
            let own = object(schema);
            let mut properties = Map::new();
            properties.insert(
                "type".into(),
                json!({"const": tag, "description": "The component type."}),
            );
            let mut required = vec![json!("type")];
            for part in [&shared, &own] {
                if let Some(Value::Object(p)) = part.get("properties") {
                    properties.extend(p.clone());
                }
                if let Some(Value::Array(r)) = part.get("required") {
                    required.extend(r.iter().cloned());
                }
            }
            let mut branch = Map::new();
            branch.insert("title".into(), json!(tag));
            if let Some(d) = own.get("description") {
                branch.insert("description".into(), d.clone());
            }
            branch.insert("type".into(), json!("object"));
            branch.insert("properties".into(), Value::Object(properties));
            branch.insert("required".into(), Value::Array(required));
            branch.insert("additionalProperties".into(), json!(false));
            Value::Object(branch)
        })
        .collect();
    let _ = generator;
    json!({ "oneOf": branches })
}

/// The whole schema as pretty JSON (what `flowgate schema` prints).
pub fn pipeline_schema() -> Value {
    let mut generator = SchemaSettings::draft2020_12().into_generator();
    let source_shared = object(SourceCommon::json_schema(&mut generator));
    let stage_shared = object(StageCommon::json_schema(&mut generator));
    let source_types = SourceKind::type_schemas(&mut generator);
    let transform_types = TransformKind::type_schemas(&mut generator);
    let sink_types = SinkKind::type_schemas(&mut generator);
    let source = variants(&mut generator, source_shared, source_types);
    let transform = variants(&mut generator, stage_shared.clone(), transform_types);
    let sink = variants(&mut generator, stage_shared, sink_types);
    let tests = generator
        .subschema_for::<crate::config::tests::TestCase>()
        .to_value();
    let mut defs = generator.take_definitions(true);
    defs.insert("Source".into(), source);
    defs.insert("Transform".into(), transform);
    defs.insert("Sink".into(), sink);
    let section = |what: &str, def: &str| {
        json!({
            "description": format!("{what}, by name (names match [a-z][a-z0-9_]* and are unique across the file)."),
            "type": ["object", "null"],
            "propertyNames": {"pattern": NAME_PATTERN},
            "additionalProperties": {"$ref": format!("#/$defs/{def}")}
        })
    };
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://flowgate.dev/schemas/pipeline.schema.json",
        "title": "flowgate pipeline",
        "description": "A flowgate pipeline: sources make events, transforms change them, sinks write them. See SPEC.md and README.md.",
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "description": "Pipeline name (metrics label `pipeline`); default: the file stem."},
            "sources": section("Components that make events", "Source"),
            "transforms": section("Components that change events", "Transform"),
            "sinks": section("Components that write events", "Sink"),
            "tests": {
                "description": "Pipeline unit tests, run by `flowgate test` (SPEC §9).",
                "type": ["array", "null"],
                "items": tests
            }
        },
        "$defs": Value::Object(defs.into_iter().collect())
    })
}

pub fn pipeline_schema_text() -> String {
    let mut text =
        serde_json::to_string_pretty(&pipeline_schema()).expect("a JSON value serialises");
    text.push('\n');
    text
}
