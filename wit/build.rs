//! Generates `types.rs` from the `types` interface of the WIT package in this directory.
//!
//! One generated type serves three audiences, each switched on by attributes:
//! - serde (always): the API's JSON, snake_case fields and enum cases;
//! - wasmtime's component derives (feature `wasmtime`): hosts pass the same values to components
//!   through `bindgen!`'s `with`;
//! - wit-bindgen's guest glue (feature `guest`): guests map the interface onto these types with
//!   `generate!`'s `with`, which expects field names as wit-bindgen spells them and `_lift` on enums.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use wit_parser::{Docs, Resolve, Type, TypeDefKind, TypeId};

fn main() -> Result<()> {
    let wit_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for entry in std::fs::read_dir(&wit_dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "wit") {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let code = generate(&wit_dir)?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let out = out_dir.join("types.rs");
    std::fs::write(&out, code).with_context(|| format!("writing {}", out.display()))?;
    let out = out_dir.join("schemas.json");
    std::fs::write(
        &out,
        serde_json::to_string_pretty(&json_schemas(&wit_dir)?)?,
    )
    .with_context(|| format!("writing {}", out.display()))?;
    Ok(())
}

/// The `types` interface of the package in `wit_dir`.
fn load(wit_dir: &Path) -> Result<(Resolve, wit_parser::InterfaceId)> {
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve
        .push_dir(wit_dir)
        .context("parsing the WIT package")?;
    let iface_id = *resolve.packages[pkg]
        .interfaces
        .get("types")
        .ok_or_else(|| anyhow!("the package has no `types` interface"))?;
    Ok((resolve, iface_id))
}

/// A JSON Schema (OpenAPI 3.1) for every type, keyed by its Rust name: what the generated
/// serde code reads and writes, so the API's OpenAPI document cannot drift from its JSON.
fn json_schemas(wit_dir: &Path) -> Result<serde_json::Value> {
    use serde_json::{Map, Value, json};
    let (resolve, iface_id) = load(wit_dir)?;
    let mut schemas = Map::new();
    for (name, &id) in &resolve.interfaces[iface_id].types {
        let def = &resolve.types[id];
        let mut schema = match &def.kind {
            TypeDefKind::Type(ty) => schema_of(&resolve, ty)?,
            TypeDefKind::Record(record) => {
                let mut properties = Map::new();
                let mut required = Vec::new();
                for field in &record.fields {
                    let mut field_schema = schema_of(&resolve, &field.ty)?;
                    if is_option(&resolve, &field.ty) {
                        // Left out when absent; `null` is read as absent too.
                        field_schema = json!({"anyOf": [field_schema, {"type": "null"}]});
                    } else {
                        required.push(Value::from(snake(&field.name)));
                    }
                    if let (Some(text), Value::Object(o)) =
                        (&field.docs.contents, &mut field_schema)
                    {
                        o.insert("description".into(), Value::from(text.trim()));
                    }
                    properties.insert(snake(&field.name), field_schema);
                }
                json!({"type": "object", "properties": properties, "required": required})
            }
            TypeDefKind::Enum(en) => {
                let cases: Vec<String> = en.cases.iter().map(|c| snake(&c.name)).collect();
                json!({"type": "string", "enum": cases})
            }
            other => bail!("type `{name}`: {other:?} has no JSON schema yet"),
        };
        if let (Some(text), Value::Object(o)) = (&def.docs.contents, &mut schema) {
            o.insert("description".into(), Value::from(text.trim()));
        }
        schemas.insert(camel(name), schema);
    }
    Ok(Value::Object(schemas))
}

fn schema_of(resolve: &Resolve, ty: &Type) -> Result<serde_json::Value> {
    use serde_json::json;
    Ok(match ty {
        Type::Bool => json!({"type": "boolean"}),
        Type::U8 => json!({"type": "integer", "minimum": 0, "maximum": u8::MAX}),
        Type::U16 => json!({"type": "integer", "minimum": 0, "maximum": u16::MAX}),
        Type::U32 => json!({"type": "integer", "minimum": 0, "maximum": u32::MAX}),
        Type::U64 => json!({"type": "integer", "minimum": 0, "format": "uint64"}),
        Type::S8 | Type::S16 | Type::S32 => json!({"type": "integer", "format": "int32"}),
        Type::S64 => json!({"type": "integer", "format": "int64"}),
        Type::F32 | Type::F64 => json!({"type": "number"}),
        Type::Char => json!({"type": "string", "minLength": 1, "maxLength": 1}),
        Type::String => json!({"type": "string"}),
        Type::Id(id) => {
            let def = &resolve.types[*id];
            if let Some(name) = &def.name {
                return Ok(json!({"$ref": format!("#/components/schemas/{}", camel(name))}));
            }
            match &def.kind {
                TypeDefKind::Option(t) | TypeDefKind::Type(t) => schema_of(resolve, t)?,
                TypeDefKind::List(t) => json!({"type": "array", "items": schema_of(resolve, t)?}),
                other => bail!("anonymous {other:?} has no JSON schema yet"),
            }
        }
        other => bail!("{other:?} has no JSON schema yet"),
    })
}

fn generate(wit_dir: &Path) -> Result<String> {
    let (resolve, iface_id) = load(wit_dir)?;
    let iface = &resolve.interfaces[iface_id];

    let mut out = String::from("// @generated by wit/build.rs from types.wit. Do not edit.\n\n");
    for (name, &id) in &iface.types {
        let def = &resolve.types[id];
        match &def.kind {
            TypeDefKind::Type(ty) => {
                docs(&mut out, &def.docs, "");
                writeln!(
                    out,
                    "pub type {} = {};\n",
                    camel(name),
                    rust_type(&resolve, ty)?
                )?;
            }
            TypeDefKind::Record(record) => {
                let ty = camel(name);
                let secrets: Vec<&str> = record
                    .fields
                    .iter()
                    .filter(|f| holds_secret(&resolve, &f.ty))
                    .map(|f| f.name.as_str())
                    .collect();
                docs(&mut out, &def.docs, "");
                out.push_str(if secrets.is_empty() {
                    "#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]\n"
                } else {
                    "#[derive(Clone, PartialEq, serde::Serialize, serde::Deserialize)]\n"
                });
                out.push_str(
                    "#[cfg_attr(feature = \"wasmtime\", derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower))]\n",
                );
                out.push_str("#[cfg_attr(feature = \"wasmtime\", component(record))]\n");
                writeln!(out, "pub struct {ty} {{")?;
                for field in &record.fields {
                    docs(&mut out, &field.docs, "    ");
                    if is_option(&resolve, &field.ty) {
                        // Absent, not `null`: valid whether a reader honours the contract's
                        // OpenAPI 3.0-style `nullable` or reads it as strict 3.1.
                        out.push_str(
                            "    #[serde(default, skip_serializing_if = \"Option::is_none\")]\n",
                        );
                    }
                    writeln!(
                        out,
                        "    #[cfg_attr(feature = \"wasmtime\", component(name = \"{}\"))]",
                        field.name
                    )?;
                    writeln!(
                        out,
                        "    pub {}: {},",
                        snake(&field.name),
                        rust_type(&resolve, &field.ty)?
                    )?;
                }
                out.push_str("}\n\n");

                let fields: Vec<String> = record
                    .fields
                    .iter()
                    .map(|f| format!("\"{}\"", snake(&f.name)))
                    .collect();
                writeln!(out, "impl {ty} {{")?;
                writeln!(out, "    /// The JSON field names, in WIT order.")?;
                writeln!(
                    out,
                    "    pub const JSON_FIELDS: [&'static str; {}] = [{}];\n}}\n",
                    fields.len(),
                    fields.join(", ")
                )?;
                if !secrets.is_empty() {
                    debug_redacting(&mut out, &ty, record, &secrets)?;
                }
            }
            TypeDefKind::Enum(en) => {
                let ty = camel(name);
                docs(&mut out, &def.docs, "");
                out.push_str(
                    "#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]\n",
                );
                out.push_str(
                    "#[cfg_attr(feature = \"wasmtime\", derive(wasmtime::component::ComponentType, wasmtime::component::Lift, wasmtime::component::Lower))]\n",
                );
                out.push_str("#[cfg_attr(feature = \"wasmtime\", component(enum))]\n");
                out.push_str("#[serde(rename_all = \"snake_case\")]\n#[repr(u8)]\n");
                writeln!(out, "pub enum {ty} {{")?;
                for case in &en.cases {
                    docs(&mut out, &case.docs, "    ");
                    writeln!(
                        out,
                        "    #[cfg_attr(feature = \"wasmtime\", component(name = \"{}\"))]",
                        case.name
                    )?;
                    writeln!(out, "    {},", camel(&case.name))?;
                }
                out.push_str("}\n\n");

                writeln!(out, "impl {ty} {{")?;
                writeln!(out, "    /// Every case, in WIT order.")?;
                let all: Vec<String> = en
                    .cases
                    .iter()
                    .map(|c| format!("Self::{}", camel(&c.name)))
                    .collect();
                writeln!(
                    out,
                    "    pub const ALL: [Self; {}] = [{}];",
                    all.len(),
                    all.join(", ")
                )?;
                writeln!(
                    out,
                    "    /// The JSON (and database) spelling of this case."
                )?;
                writeln!(
                    out,
                    "    pub const fn as_str(self) -> &'static str {{\n        match self {{"
                )?;
                for case in &en.cases {
                    writeln!(
                        out,
                        "            Self::{} => \"{}\",",
                        camel(&case.name),
                        case.name.replace('-', "_")
                    )?;
                }
                out.push_str("        }\n    }\n\n");
                out.push_str("    #[cfg(feature = \"guest\")]\n    #[doc(hidden)]\n");
                out.push_str("    /// # Safety\n    /// `val` must be a discriminant a component passed for this enum.\n");
                out.push_str("    pub unsafe fn _lift(val: u8) -> Self {\n        match val {\n");
                for (i, case) in en.cases.iter().enumerate() {
                    writeln!(out, "            {i} => Self::{},", camel(&case.name))?;
                }
                out.push_str("            _ => panic!(\"invalid enum discriminant\"),\n        }\n    }\n}\n\n");

                writeln!(out, "impl std::fmt::Display for {ty} {{")?;
                out.push_str("    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\n        f.write_str(self.as_str())\n    }\n}\n\n");
                writeln!(out, "impl std::str::FromStr for {ty} {{")?;
                out.push_str("    type Err = crate::UnknownCase;\n");
                out.push_str("    fn from_str(s: &str) -> Result<Self, Self::Err> {\n");
                out.push_str("        Self::ALL.into_iter().find(|c| c.as_str() == s).ok_or_else(|| crate::UnknownCase {\n");
                writeln!(out, "            type_name: \"{name}\",")?;
                out.push_str("            value: s.to_string(),\n        })\n    }\n}\n\n");
            }
            other => bail!("type `{name}`: {other:?} is not supported in the shared types yet"),
        }
    }
    Ok(out)
}

fn rust_type(resolve: &Resolve, ty: &Type) -> Result<String> {
    Ok(match ty {
        Type::Bool => "bool".into(),
        Type::U8 => "u8".into(),
        Type::U16 => "u16".into(),
        Type::U32 => "u32".into(),
        Type::U64 => "u64".into(),
        Type::S8 => "i8".into(),
        Type::S16 => "i16".into(),
        Type::S32 => "i32".into(),
        Type::S64 => "i64".into(),
        Type::F32 => "f32".into(),
        Type::F64 => "f64".into(),
        Type::Char => "char".into(),
        Type::String => "String".into(),
        Type::Id(id) => type_id(resolve, *id)?,
        other => bail!("{other:?} is not supported in the shared types"),
    })
}

fn type_id(resolve: &Resolve, id: TypeId) -> Result<String> {
    let def = &resolve.types[id];
    if let Some(name) = &def.name {
        return Ok(camel(name));
    }
    Ok(match &def.kind {
        TypeDefKind::Option(t) => format!("Option<{}>", rust_type(resolve, t)?),
        TypeDefKind::List(t) => format!("Vec<{}>", rust_type(resolve, t)?),
        TypeDefKind::Type(t) => rust_type(resolve, t)?,
        other => bail!("anonymous {other:?} is not supported in the shared types"),
    })
}

/// A `Debug` that prints `<redacted>` for the `secret` fields, so a secret cannot reach a log
/// through `{:?}`.
fn debug_redacting(
    out: &mut String,
    ty: &str,
    record: &wit_parser::Record,
    secrets: &[&str],
) -> Result<()> {
    writeln!(out, "impl std::fmt::Debug for {ty} {{")?;
    out.push_str("    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {\n");
    writeln!(out, "        f.debug_struct(\"{ty}\")")?;
    for field in &record.fields {
        let name = snake(&field.name);
        if secrets.contains(&field.name.as_str()) {
            writeln!(out, "            .field(\"{name}\", &\"<redacted>\")")?;
        } else {
            writeln!(out, "            .field(\"{name}\", &self.{name})")?;
        }
    }
    out.push_str("            .finish()\n    }\n}\n\n");
    Ok(())
}

/// Whether `ty` is the `secret` alias, or an option or list of it.
fn holds_secret(resolve: &Resolve, ty: &Type) -> bool {
    let Type::Id(id) = ty else {
        return false;
    };
    let def = &resolve.types[*id];
    if def.name.as_deref() == Some("secret") {
        return true;
    }
    match &def.kind {
        TypeDefKind::Option(t) | TypeDefKind::List(t) => holds_secret(resolve, t),
        _ => false,
    }
}

fn is_option(resolve: &Resolve, ty: &Type) -> bool {
    match ty {
        Type::Id(id) => match &resolve.types[*id].kind {
            TypeDefKind::Option(_) => true,
            TypeDefKind::Type(t) => is_option(resolve, t),
            _ => false,
        },
        _ => false,
    }
}

fn docs(out: &mut String, docs: &Docs, indent: &str) {
    if let Some(text) = &docs.contents {
        for line in text.lines() {
            out.push_str(indent);
            out.push_str("///");
            if !line.is_empty() {
                out.push(' ');
                out.push_str(line);
            }
            out.push('\n');
        }
    }
}

fn camel(kebab: &str) -> String {
    kebab
        .split('-')
        .map(|part| {
            let mut chars = part.chars();
            match chars.next() {
                Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
                None => String::new(),
            }
        })
        .collect()
}

fn snake(kebab: &str) -> String {
    kebab.replace('-', "_")
}
