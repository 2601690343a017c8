//! `spec/triggers.schema.json`, generated from the types the loader deserializes (like
//! the workflow schema, see decision 0001). A test fails when the committed file is stale.

use serde_json::Value;

use crate::config::TriggersFile;

/// The JSON Schema of `triggers.yml`.
pub fn json_schema() -> Value {
    let generator = schemars::generate::SchemaSettings::draft2020_12().into_generator();
    let mut value = generator.into_root_schema_for::<TriggersFile>().to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.insert(
            "$id".into(),
            Value::String("https://worktrain.dev/spec/triggers.schema.json".into()),
        );
        obj.insert(
            "title".into(),
            Value::String("worktrain triggers.yml".into()),
        );
    }
    value
}
