//! The document's top-level `webhooks` (OpenAPI 3.1): one entry per event type the notifier sends,
//! with the Standard Webhooks envelope and headers. utoipa 5 cannot express `webhooks`, so they are
//! added to the generated JSON here; the envelopes go to `components.schemas` next to the `Job`
//! schema that the job events carry.

use serde_json::{Value, json};

use crate::journal::hooks::EVENT_TYPES;

/// What each event type announces, and the schema of its `data`.
fn event(ty: &str) -> (&'static str, Value) {
    let media = |summary, extra: Value| {
        let mut props = json!({
            "media_id": {"type": "string"},
            "job_id": {"type": "string", "description": "The job that produced it."},
        });
        props.as_object_mut().expect("object").extend(extra.as_object().cloned().unwrap_or_default());
        (summary, json!({"type": "object", "required": ["media_id", "job_id"], "properties": props}))
    };
    let job = |summary| {
        (
            summary,
            json!({"allOf": [{"$ref": "#/components/schemas/Job"}, {
                "type": "object",
                "required": ["error"],
                "properties": {
                    "error": {"oneOf": [{"type": "null"}, {"$ref": "#/components/schemas/ErrorInfo"}],
                              "description": "Why the step failed; `null` for `job.succeeded`."},
                    "failed_step": {"type": "string", "description": "The step that failed."},
                },
            }]}),
        )
    };
    match ty {
        "media.ready" => media(
            "The HLS renditions are playable",
            json!({"hls": {"type": "string", "description": "The HLS master playlist."}}),
        ),
        "media.transcribed" => media(
            "The transcript is written",
            json!({"segments": {"type": "integer", "minimum": 0, "description": "Timed text segments."}}),
        ),
        "media.indexed" => media(
            "The transcript is searchable",
            json!({"chunks": {"type": "integer", "minimum": 0, "description": "Passages indexed."}}),
        ),
        "job.succeeded" => job("Every step of the job succeeded"),
        "job.failed" => job("A step failed and will be retried after its backoff"),
        "job.dead" => job("Retries are spent or the error is permanent (dead letter)"),
        other => unreachable!("event type {other} is not described"),
    }
}

/// `media.ready` → `MediaReadyEvent`.
fn schema_name(ty: &str) -> String {
    let mut name: String = ty.split('.').map(|w| w[..1].to_uppercase() + &w[1..]).collect();
    name.push_str("Event");
    name
}

/// A Standard Webhooks request header.
fn header(name: &str, description: &str, schema: Value) -> Value {
    json!({"name": name, "in": "header", "required": true, "description": description, "schema": schema})
}

/// Adds `webhooks` and the envelope schemas to the document.
pub(super) fn add(doc: &mut Value) {
    let headers = json!([
        header(
            "webhook-id",
            "The message id: the same on every attempt (deduplicate on it).",
            json!({"type": "string", "pattern": "^msg_"})
        ),
        header(
            "webhook-timestamp",
            "Unix seconds of this attempt; refuse messages far from your clock.",
            json!({"type": "string", "pattern": "^[0-9]+$"})
        ),
        header(
            "webhook-signature",
            "`v1,` + base64(HMAC-SHA256(base64-decoded secret after `whsec_`, `{webhook-id}.{webhook-timestamp}.{body}`)).",
            json!({"type": "string", "pattern": "^v1,"})
        ),
    ]);
    let mut hooks = serde_json::Map::new();
    for ty in EVENT_TYPES {
        let (summary, data) = event(ty);
        let name = schema_name(ty);
        let envelope = json!({
            "type": "object",
            "description": format!("`{ty}`: {summary}."),
            "required": ["type", "timestamp", "data"],
            "properties": {
                "type": {"const": ty},
                "timestamp": {"type": "string", "format": "date-time"},
                "data": data,
            },
        });
        doc["components"]["schemas"][&name] = envelope;
        hooks.insert(
            ty.to_string(),
            json!({"post": {
                "summary": summary,
                "operationId": format!("webhook_{}", ty.replace('.', "_")),
                "tags": ["webhooks"],
                "description": "Sent to the upload's `callback_url` and to each endpoint that hears this \
                    event type, at least once, signed with the tenant's (or the endpoint's) secret. \
                    Attempts are retried with backoff until one answers 2xx.",
                "parameters": headers,
                "requestBody": {"required": true, "content": {"application/json": {
                    "schema": {"$ref": format!("#/components/schemas/{name}")}}}},
                "responses": {
                    "2XX": {"description": "Received; no further attempt."},
                    "default": {"description": "Not received: the message is sent again later."},
                },
                "security": [],
            }}),
        );
    }
    doc["webhooks"] = Value::Object(hooks);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_event_type_is_described() {
        let mut doc = json!({"components": {"schemas": {}}});
        add(&mut doc);
        for ty in EVENT_TYPES {
            let schema = &doc["webhooks"][ty]["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"];
            let name = schema.as_str().unwrap().rsplit('/').next().unwrap();
            assert_eq!(doc["components"]["schemas"][name]["properties"]["type"]["const"], *ty);
        }
        assert_eq!(schema_name("media.ready"), "MediaReadyEvent");
    }
}
