//! The JSON Schema of a saved plan (`farmctl schema --plan`); the format is
//! described field by field in docs/PLAN-FORMAT.md.

use serde_json::{json, Value};

fn string() -> Value {
    json!({ "type": "string" })
}

fn strings() -> Value {
    json!({ "type": "array", "items": { "type": "string" } })
}

fn count() -> Value {
    json!({ "type": "integer", "minimum": 0 })
}

/// One action kind: the fields common to every action, its `kind`, and its own.
fn kind(name: &str, description: &str, own: Value, required: &[&str]) -> Value {
    let mut properties = json!({
        "id": { "type": "string", "description": "unique in the plan; other actions name it in depends_on" },
        "host": { "type": "string", "description": "the farm host it runs on or is about" },
        "stage": { "type": "integer", "minimum": 0, "description": "index into stages" },
        "level": { "type": "integer", "minimum": 0, "description": "within a stage, level n waits for the gates of level n-1; absent means 0" },
        "at": { "type": "string", "format": "date-time", "description": "the stage's switch time (RFC 3339); absent means when applied" },
        "depends_on": strings(),
        "kind": { "const": name }
    });
    for (k, v) in own.as_object().expect("an object of properties") {
        properties[k] = v.clone();
    }
    let mut req = vec!["id", "host", "stage", "depends_on", "kind"];
    req.extend_from_slice(required);
    json!({ "type": "object", "description": description, "properties": properties, "required": req, "additionalProperties": false })
}

/// The JSON Schema (draft 2020-12) of a plan file of `format_version` 1.
pub fn schema() -> Value {
    let sha = json!({ "type": "string", "pattern": "^[0-9a-f]{64}$" });
    let actions = vec![
        kind(
            "edit",
            "write one file: from before_sha256 to after_sha256, or nothing",
            json!({
                "path": string(), "before_sha256": sha, "after_sha256": sha, "after_size": count(),
                "reasons": strings(), "diff": { "type": "string", "description": "unified diff, for review; apply checks the hashes, not this" }
            }),
            &["path", "before_sha256", "after_sha256", "after_size", "reasons", "diff"],
        ),
        kind("reload", "the host's role reload, after its edits of the stage", json!({ "command": string() }), &["command"]),
        kind("gate", "the host must be reachable (and its health pass) before clients switch to it", json!({ "command": string() }), &[]),
        kind(
            "upgrade",
            "bring the host from one version to another",
            json!({ "role": string(), "from": string(), "to": string(), "probe": string(), "command": string(), "rollback": string() }),
            &["role", "from", "to", "probe", "command"],
        ),
        kind(
            "wave_gate",
            "a rollout wave is done when each of its hosts gives `samples` healthy samples in a row",
            json!({
                "role": string(), "wave": string(), "hosts": strings(), "watch": strings(), "health": string(), "metrics": queries(), "conditions": strings(),
                "samples": count(), "failure_limit": count(), "version": string(), "probe": string(), "interval_ms": count(), "timeout_ms": count(), "max_unavailable": count()
            }),
            &["role", "wave", "hosts", "watch", "health", "samples", "failure_limit", "version", "probe", "interval_ms", "timeout_ms", "max_unavailable"],
        ),
        kind(
            "judge",
            "a shadow canary is sampled with the active members and judged by the join conditions",
            json!({
                "role": string(), "canary": string(), "baseline": strings(), "health": string(), "metrics": queries(), "window_ms": count(), "interval_ms": count(),
                "join": strings(), "confidence": { "type": "number" }, "promote": strings(), "exit": strings(), "from": string()
            }),
            &["role", "canary", "baseline", "health", "window_ms", "interval_ms", "join", "promote", "exit", "from"],
        ),
        kind("retire", "no host refers to the host any more: its role's retire command runs", json!({ "replaced_by": string(), "command": string() }), &["replaced_by"]),
    ];
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "farmctl plan",
        "description": "A plan saved with `farmctl plan -o`. Its id is the digest of its content; farmctl applies it only byte for byte as written.",
        "type": "object",
        "required": ["format_version", "id", "farm", "limit", "hosts", "stages", "actions", "notes"],
        "additionalProperties": false,
        "properties": {
            "format_version": { "const": super::FORMAT_VERSION },
            "id": { "type": "string", "pattern": "^[0-9a-f]{16}$", "description": "the first 16 hex digits of the sha256 of this JSON with id empty" },
            "farm": {
                "type": "object", "additionalProperties": false, "required": ["name", "path", "sha256"],
                "properties": { "name": string(), "path": string(), "sha256": sha }
            },
            "limit": strings(),
            "hosts": { "type": "array", "items": {
                "type": "object", "additionalProperties": false, "required": ["name", "role", "status"],
                "properties": {
                    "name": string(), "role": string(),
                    "status": { "enum": ["changed", "unchanged", "unreachable", "failed"] },
                    "error": string(), "hint": string()
                }
            }},
            "stages": { "type": "array", "items": {
                "type": "object", "additionalProperties": false, "required": ["index", "actions"],
                "properties": { "index": count(), "at": { "type": "string", "format": "date-time" }, "actions": strings() }
            }},
            "actions": { "type": "array", "items": { "oneOf": actions } },
            "notes": strings()
        }
    })
}

/// A gate's or a judgement's Prometheus queries: the server, then host -> metric -> query.
fn queries() -> Value {
    json!({
        "type": "object", "additionalProperties": false, "required": ["prometheus", "by_host"],
        "properties": {
            "prometheus": { "type": "string" },
            "by_host": { "type": "object", "additionalProperties": { "type": "object", "additionalProperties": { "type": "string" } } }
        }
    })
}
