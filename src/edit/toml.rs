//! Format-preserving edits of TOML files. Pure.
//!
//! Replacements rewrite only the bytes of string values (never keys or
//! comments), located through `toml_edit`'s spans, so every byte outside a
//! matched token survives. `set` assignments go through `toml_edit`'s mutable
//! document and keep the decor (comments, spacing) of the value they replace.

use super::tokens::Replacer;
use super::EditError;
use crate::farm::SetValue;
use std::ops::Range;
use toml_edit::{Document, DocumentMut, Item, Key, Value};

fn parse_error(e: toml_edit::TomlError, text: &str) -> EditError {
    let (line, col) = e
        .span()
        .map(|s| crate::farm::line_col(text, s.start))
        .unwrap_or((1, 1));
    EditError::Toml { line, col, message: e.message().trim().to_string() }
}

fn collect_item(item: &Item, out: &mut Vec<Range<usize>>) {
    match item {
        Item::Value(v) => collect_value(v, out),
        Item::Table(t) => t.iter().for_each(|(_, i)| collect_item(i, out)),
        Item::ArrayOfTables(a) => a.iter().for_each(|t| t.iter().for_each(|(_, i)| collect_item(i, out))),
        Item::None => {}
    }
}

fn collect_value(v: &Value, out: &mut Vec<Range<usize>>) {
    match v {
        Value::String(_) => out.extend(v.span()),
        Value::Array(a) => a.iter().for_each(|v| collect_value(v, out)),
        Value::InlineTable(t) => t.iter().for_each(|(_, v)| collect_value(v, out)),
        _ => {}
    }
}

/// Applies the replacer inside string values only. Returns the new text and the origins hit.
pub fn replace_in_strings(text: &str, replacer: &Replacer) -> Result<(String, Vec<usize>), EditError> {
    let doc = Document::parse(text).map_err(|e| parse_error(e, text))?;
    let mut spans = Vec::new();
    collect_item(doc.as_item(), &mut spans);
    spans.sort_by_key(|s| s.start);
    let mut out = String::with_capacity(text.len());
    let mut origins = Vec::new();
    let mut cursor = 0;
    for span in spans {
        if span.start < cursor {
            continue;
        }
        out.push_str(&text[cursor..span.start]);
        let replaced = replacer.apply_within(text[span.clone()].as_bytes(), text.as_bytes(), span.start);
        origins.extend(replaced.origins);
        // Tokens and replacements are whole UTF-8 strings, so this cannot fail.
        out.push_str(&String::from_utf8(replaced.bytes).expect("utf-8 in, utf-8 out"));
        cursor = span.end;
    }
    out.push_str(&text[cursor..]);
    if !origins.is_empty() {
        // A replacement must never make the file unparseable.
        Document::parse(out.as_str()).map_err(|e| parse_error(e, &out))?;
    }
    origins.sort_unstable();
    origins.dedup();
    Ok((out, origins))
}

fn to_toml(v: &SetValue) -> Value {
    match v {
        SetValue::String(s) => Value::from(s.as_str()),
        SetValue::Integer(i) => Value::from(*i),
        SetValue::Float(f) => Value::from(*f),
        SetValue::Bool(b) => Value::from(*b),
        SetValue::Array(items) => {
            let mut a = toml_edit::Array::new();
            items.iter().for_each(|i| a.push(to_toml(i)));
            Value::Array(a)
        }
    }
}

fn same(existing: &Value, wanted: &SetValue) -> bool {
    match (existing, wanted) {
        (Value::String(a), SetValue::String(b)) => a.value() == b,
        (Value::Integer(a), SetValue::Integer(b)) => a.value() == b,
        (Value::Float(a), SetValue::Float(b)) => a.value() == b,
        (Value::Boolean(a), SetValue::Bool(b)) => a.value() == b,
        (Value::Array(a), SetValue::Array(b)) => {
            a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same(x, y))
        }
        _ => false,
    }
}

/// Assigns `key` (dotted) to `value`. Returns whether the document changed.
fn set_one(doc: &mut DocumentMut, key: &str, value: &SetValue) -> Result<bool, EditError> {
    let path = Key::parse(key).map_err(|e| EditError::BadKey { key: key.into(), message: e.to_string() })?;
    let (last, parents) = path.split_last().ok_or_else(|| EditError::BadKey { key: key.into(), message: "empty key".into() })?;
    let mut table: &mut dyn toml_edit::TableLike = doc.as_table_mut();
    for part in parents {
        let entry = table.entry_format(part).or_insert_with(|| {
            let mut t = toml_edit::Table::new();
            t.set_implicit(true);
            Item::Table(t)
        });
        table = entry.as_table_like_mut().ok_or_else(|| EditError::BadKey {
            key: key.into(),
            message: format!("`{}` is not a table", part.get()),
        })?;
    }
    match table.get_mut(last.get()) {
        Some(Item::Value(existing)) => {
            if same(existing, value) {
                return Ok(false);
            }
            let decor = existing.decor().clone();
            *existing = to_toml(value);
            *existing.decor_mut() = decor;
        }
        Some(_) => {
            return Err(EditError::BadKey { key: key.into(), message: "is a table, not a value".into() })
        }
        None => {
            table.insert(last.get(), Item::Value(to_toml(value)));
        }
    }
    Ok(true)
}

/// Applies `set` assignments; returns the new text and the keys that changed.
pub fn apply_sets(text: &str, sets: &[(String, SetValue)]) -> Result<(String, Vec<String>), EditError> {
    if sets.is_empty() {
        return Ok((text.to_string(), Vec::new()));
    }
    let mut doc: DocumentMut = text.parse().map_err(|e| parse_error(e, text))?;
    let mut changed = Vec::new();
    for (key, value) in sets {
        if set_one(&mut doc, key, value)? {
            changed.push(key.clone());
        }
    }
    if changed.is_empty() {
        return Ok((text.to_string(), changed));
    }
    Ok((doc.to_string(), changed))
}

/// The strings of the array at a dotted key path, if there is one.
pub fn string_list(text: &str, key: &str) -> Option<Vec<String>> {
    let doc: DocumentMut = text.parse().ok()?;
    let path = Key::parse(key).ok()?;
    let mut item: &Item = doc.as_item();
    for k in &path {
        item = item.get(k.get())?;
    }
    let arr = item.as_array()?;
    Some(arr.iter().filter_map(|v| v.as_str().map(str::to_string)).collect())
}
