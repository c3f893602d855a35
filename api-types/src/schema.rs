//! Schemas that the derive cannot write in OpenAPI 3.0 form (which has no tuples).

use schemars::gen::SchemaGenerator;
use schemars::schema::{ArrayValidation, InstanceType, Schema, SchemaObject, SubschemaValidation};
use schemars::JsonSchema;

/// `Vec<(K, u64)>` on the wire: an array of `[key, count]` pairs, each item a `K` or a count.
pub fn counted<K: JsonSchema>(g: &mut SchemaGenerator) -> Schema {
    let pair = SchemaObject {
        instance_type: Some(InstanceType::Array.into()),
        array: Some(Box::new(ArrayValidation {
            items: Some(
                Schema::Object(SchemaObject {
                    subschemas: Some(Box::new(SubschemaValidation {
                        one_of: Some(vec![g.subschema_for::<K>(), g.subschema_for::<u64>()]),
                        ..Default::default()
                    })),
                    ..Default::default()
                })
                .into(),
            ),
            min_items: Some(2),
            max_items: Some(2),
            ..Default::default()
        })),
        ..Default::default()
    };
    Schema::Object(SchemaObject {
        instance_type: Some(InstanceType::Array.into()),
        array: Some(Box::new(ArrayValidation {
            items: Some(Schema::Object(pair).into()),
            ..Default::default()
        })),
        ..Default::default()
    })
}
