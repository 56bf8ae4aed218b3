//! The document's schemas are the ones served: real answers of the main operations (create,
//! read, list, status, actions, delete, files, images, session, `/events`, errors) are
//! checked against the schema `/openapi.json` gives for that operation and status. Objects
//! are read as closed: a field served but not documented fails as well as a documented
//! field of the wrong type or a required one missing. (schemathesis checks generated
//! requests the same way, `ops.rs`; this checks answers it cannot reach on its own: a
//! running container's status, a symlink in a listing, a waited-for delete, the events.)

use serde_json::{json, Value};

use crate::common::*;

/// The schema `$ref` points to (`#/components/schemas/X`).
fn resolve<'a>(doc: &'a Value, reference: &str) -> &'a Value {
    let pointer = reference.trim_start_matches('#');
    doc.pointer(pointer)
        .unwrap_or_else(|| panic!("{reference} is not in the document"))
}

fn type_matches(t: &str, v: &Value) -> bool {
    match t {
        "null" => v.is_null(),
        "boolean" => v.is_boolean(),
        "integer" => v.is_i64() || v.is_u64(),
        "number" => v.is_number(),
        "string" => v.is_string(),
        "array" => v.is_array(),
        "object" => v.is_object(),
        _ => false,
    }
}

/// The property names a schema declares, through `$ref` and `allOf`.
fn declared(doc: &Value, schema: &Value, out: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        declared(doc, resolve(doc, r), out);
    }
    if let Some(props) = schema["properties"].as_object() {
        out.extend(props.keys().cloned());
    }
    for part in schema["allOf"].as_array().into_iter().flatten() {
        declared(doc, part, out);
    }
}

/// The JSON Schema 2020-12 keywords utoipa writes, enough to tell a body from another:
/// `$ref`, `allOf`/`oneOf`/`anyOf`, `type` (one or a list), `enum`, `properties`,
/// `required`, `additionalProperties`, `items`, `minimum`/`maximum`. With `closed`, an
/// object may hold only declared properties.
fn check(doc: &Value, schema: &Value, v: &Value, at: &str, closed: bool, errs: &mut Vec<String>) {
    if let Some(r) = schema["$ref"].as_str() {
        return check(doc, resolve(doc, r), v, at, closed, errs);
    }
    if let Some(parts) = schema["allOf"].as_array() {
        for part in parts {
            check(doc, part, v, at, false, errs);
        }
    }
    for (key, wanted) in [("oneOf", Some(1)), ("anyOf", None)] {
        if let Some(parts) = schema[key].as_array() {
            let passing = parts
                .iter()
                .filter(|p| {
                    let mut e = Vec::new();
                    check(doc, p, v, at, closed, &mut e);
                    e.is_empty()
                })
                .count();
            if wanted.map_or(passing == 0, |n| passing != n) {
                errs.push(format!("{at}: {passing} of {key} match {v}"));
            }
        }
    }
    match &schema["type"] {
        Value::String(t) if !type_matches(t, v) => errs.push(format!("{at}: not {t}: {v}")),
        Value::Array(ts) if !ts.iter().any(|t| type_matches(t.as_str().unwrap_or(""), v)) => {
            errs.push(format!("{at}: not {ts:?}: {v}"))
        }
        _ => {}
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(v) {
            errs.push(format!("{at}: {v} is not one of {allowed:?}"));
        }
    }
    if let (Some(n), Some(min)) = (v.as_f64(), schema["minimum"].as_f64()) {
        if n < min {
            errs.push(format!("{at}: {n} < {min}"));
        }
    }
    if let (Some(n), Some(max)) = (v.as_f64(), schema["maximum"].as_f64()) {
        if n > max {
            errs.push(format!("{at}: {n} > {max}"));
        }
    }
    if let Some(items) = v.as_array() {
        if schema["items"].is_object() {
            for (i, item) in items.iter().enumerate() {
                check(
                    doc,
                    &schema["items"],
                    item,
                    &format!("{at}[{i}]"),
                    true,
                    errs,
                );
            }
        }
    }
    let Some(object) = v.as_object() else {
        return;
    };
    for name in schema["required"].as_array().into_iter().flatten() {
        let name = name.as_str().unwrap_or_default();
        if !object.contains_key(name) {
            errs.push(format!("{at}: required `{name}` is missing"));
        }
    }
    let props = &schema["properties"];
    let extra = &schema["additionalProperties"];
    for (name, value) in object {
        let path = format!("{at}.{name}");
        if props[name].is_object() {
            check(doc, &props[name], value, &path, true, errs);
        } else if extra.is_object() {
            check(doc, extra, value, &path, true, errs);
        }
    }
    // Closed: every property is declared (by this schema or the parts of its `allOf`).
    let open = extra.is_object() || *extra == Value::Bool(true) || schema["oneOf"].is_array();
    if closed && !open && (props.is_object() || schema["allOf"].is_array()) {
        let mut names = Vec::new();
        declared(doc, schema, &mut names);
        for name in object.keys().filter(|k| !names.contains(k)) {
            errs.push(format!("{at}: `{name}` is served but not documented"));
        }
    }
}

/// Asserts that `body` is what the document says `method path` answers with `status`.
fn conforms(doc: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let op = &doc["paths"][path][method];
    assert!(op.is_object(), "{method} {path} is not documented");
    let response = &op["responses"][status.to_string()];
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status} has no JSON schema: {response}"
    );
    let mut errs = Vec::new();
    check(doc, schema, body, "$", true, &mut errs);
    assert!(
        errs.is_empty(),
        "{method} {path} {status} does not match its schema:\n{}\nbody: {body}",
        errs.join("\n")
    );
}

/// The same for a component schema (an `/events` payload).
fn conforms_to(doc: &Value, component: &str, body: &Value) {
    let schema = json!({"$ref": format!("#/components/schemas/{component}")});
    let mut errs = Vec::new();
    check(doc, &schema, body, "$", true, &mut errs);
    assert!(
        errs.is_empty(),
        "{component} does not match:\n{}\nbody: {body}",
        errs.join("\n")
    );
}

/// The checker itself refuses what it must: a missing field, a wrong type, an undocumented
/// field, a value outside an enum.
#[tokio::test]
async fn the_schema_check_fails_on_drift() {
    let s = Server::start().await;
    let doc = s.get("/openapi.json").await.json;
    let fails = |body: Value| {
        let schema = json!({"$ref": "#/components/schemas/ErrorBody"});
        let mut errs = Vec::new();
        check(&doc, &schema, &body, "$", true, &mut errs);
        assert!(!errs.is_empty(), "accepted {body}");
    };
    let r = s.get("/containers/cnope").await;
    let good = r.json.clone();
    conforms(&doc, "get", "/containers/{cuid}", 404, &good);
    let mut missing = good.clone();
    missing.as_object_mut().unwrap().remove("request_id");
    fails(missing);
    let mut wrong = good.clone();
    wrong["status"] = json!("404");
    fails(wrong);
    let mut extra = good.clone();
    extra["hint"] = json!("undocumented");
    fails(extra);
    let mut kind = good;
    kind["error"] = json!("oops");
    fails(kind);
}

#[tokio::test]
async fn live_answers_match_the_documented_schemas() {
    let s = Server::start().await;
    let doc = s.get("/openapi.json").await.json;

    // A created container: create, read, list, status from the store.
    let r = s
        .post_json(
            "/containers",
            &json!({"image": BUSYBOX, "command": SLEEPER, "env": {"A": "1"}, "tags": ["t"],
                    "resources": {"memory": "64m", "pids": 50}, "restart": "no"}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    conforms(&doc, "post", "/containers", 201, &r.json);
    let created = r.json["cuid"].as_str().unwrap().to_owned();
    let r = s.get(&format!("/containers/{created}")).await;
    conforms(&doc, "get", "/containers/{cuid}", 200, &r.json);
    let r = s.get(&format!("/containers/{created}/status")).await;
    assert_eq!(r.json["source"], "store", "{}", r.text);
    conforms(&doc, "get", "/containers/{cuid}/status", 200, &r.json);

    // A running one: its status from Docker, an action, the listing of both.
    let running = s
        .create_started(&json!({"image": BUSYBOX, "command": SLEEPER}))
        .await;
    let r = s.get(&format!("/containers/{running}/status")).await;
    assert_eq!(r.json["source"], "docker", "{}", r.text);
    conforms(&doc, "get", "/containers/{cuid}/status", 200, &r.json);
    let r = s.get("/containers").await;
    assert_eq!(r.json["containers"].as_array().unwrap().len(), 2);
    conforms(&doc, "get", "/containers", 200, &r.json);
    let r = s.post(&format!("/containers/{running}/stop")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    conforms(&doc, "post", "/containers/{cuid}/stop", 200, &r.json);

    // Files: an upload, and a listing with a file, a directory and a symlink.
    let r = s
        .upload_zip(&created, "", zip_of(&[("d/f.txt", b"hello")]))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    conforms(&doc, "post", "/containers/{cuid}/upload-zip", 200, &r.json);
    std::os::unix::fs::symlink("/etc", s.mount(&created).join("d/link")).unwrap();
    let r = s.get(&format!("/containers/{created}/files?path=d")).await;
    assert_eq!(r.json["entries"].as_array().unwrap().len(), 2, "{}", r.text);
    conforms(&doc, "get", "/containers/{cuid}/files", 200, &r.json);

    // Images, health, the console's session.
    let r = s.get("/images").await;
    assert!(
        !r.json["images"].as_array().unwrap().is_empty(),
        "{}",
        r.text
    );
    conforms(&doc, "get", "/images", 200, &r.json);
    let r = s.get("/healthz").await;
    conforms(&doc, "get", "/healthz", r.status, &r.json);
    let (r, signed) = sign_in(&s, USER, PASS).await;
    conforms(&doc, "post", "/session", 200, &r.json);
    let signed = signed.unwrap();
    let r = s
        .send(with_session(&s, reqwest::Method::GET, "/session", &signed))
        .await;
    conforms(&doc, "get", "/session", 200, &r.json);
    let r = s
        .send(with_session(
            &s,
            reqwest::Method::POST,
            "/session/ticket",
            &signed,
        ))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    conforms(&doc, "post", "/session/ticket", 200, &r.json);

    // Errors: bad input, an unknown container, a refused transition.
    let r = s.post_json("/containers", &json!({"image": 5})).await;
    r.assert_error(400, "validation_error", "INVALID_IMAGE");
    conforms(&doc, "post", "/containers", 400, &r.json);
    let r = s.post(&format!("/containers/{created}/pause")).await;
    assert_eq!(r.status, 422, "{}", r.text);
    conforms(&doc, "post", "/containers/{cuid}/pause", 422, &r.json);

    // The events: every container's first event, and a reset.
    let events = read_events(&s, 0, 2).await;
    assert!(events.len() >= 2, "{events:?}");
    for (_, kind, data) in &events {
        assert_eq!(kind, "container");
        conforms_to(&doc, "ContainerEvent", data);
    }
    let reset = read_events(&s, u64::MAX / 2, u64::MAX).await;
    assert_eq!(reset[0].1, "reset");
    conforms_to(&doc, "EventReset", &reset[0].2);

    // Deletes: accepted, and waited for (`status: deleted`).
    let r = s.delete(&format!("/containers/{running}?wait=false")).await;
    assert_eq!(r.status, 202, "{}", r.text);
    conforms(&doc, "delete", "/containers/{cuid}", 202, &r.json);
    let r = s.delete(&format!("/containers/{created}")).await;
    assert_eq!(r.json["status"], "deleted", "{}", r.text);
    conforms(&doc, "delete", "/containers/{cuid}", 200, &r.json);
}
