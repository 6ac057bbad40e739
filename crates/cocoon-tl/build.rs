//! Generates the Rust types of `schema/cocoon_api.tl`.
//!
//! Every constructor of the schema becomes a struct (`types::ns::Name` for objects,
//! `functions::ns::Name` for functions), every boxed type an enum (`enums::ns::Type`),
//! and `Object` is the enum of every constructor, used to decode a payload of unknown
//! type. The codec calls go to `crate::codec`; ids come from `tl-scheme`, which computes
//! the CRC32 of the normalized declaration or takes the explicit `#id`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::{env, fs, path::PathBuf};

use tl_scheme::{Constructor, Scheme, Type};

/// Declarations of the TL built-ins, handled by the codec rather than generated.
const BUILTINS: &[&str] = &[
    "bytes",
    "true",
    "boolTrue",
    "boolFalse",
    "vector",
    "int128",
    "int256",
];

const SCHEMA: &str = "schema/cocoon_api.tl";

fn main() {
    println!("cargo:rerun-if-changed={SCHEMA}");
    println!("cargo:rerun-if-changed=build.rs");
    let text = fs::read_to_string(SCHEMA).unwrap_or_else(|e| panic!("reading {SCHEMA}: {e}"));
    let scheme = Scheme::parse(&text).unwrap_or_else(|e| panic!("parsing {SCHEMA}: {e}"));
    if let Err(e) = scheme.validate() {
        panic!("validating {SCHEMA}: {e}");
    }
    let code = Generator::new(&scheme).generate();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    fs::write(out.join("cocoon_api.rs"), code).expect("writing generated code");
}

/// Where a generated item lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Type,
    Function,
}

struct Item<'s, 'a> {
    kind: Kind,
    ctor: &'s Constructor<'a>,
}

struct Generator<'s, 'a> {
    /// Every generated constructor by full TL name, sorted.
    items: BTreeMap<&'a str, Item<'s, 'a>>,
    /// Boxed type name → its constructors (objects only), sorted.
    boxed: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// Structs for which `Default` can be derived.
    defaultable: BTreeSet<&'a str>,
}

fn split_ns(name: &str) -> (Option<&str>, &str) {
    match name.rsplit_once('.') {
        Some((ns, local)) => (Some(ns), local),
        None => (None, name),
    }
}

fn camel(local: &str) -> String {
    let mut chars = local.chars();
    match chars.next() {
        Some(first) => first.to_ascii_uppercase().to_string() + chars.as_str(),
        None => String::new(),
    }
}

fn snake(ns: &str) -> String {
    let mut out = String::new();
    for ch in ns.chars() {
        if ch.is_ascii_uppercase() {
            out.push('_');
            out.push(ch.to_ascii_lowercase());
        } else {
            out.push(ch);
        }
    }
    out
}

fn ident(name: &str) -> String {
    const KEYWORDS: &[&str] = &[
        "as", "break", "const", "continue", "crate", "else", "enum", "extern", "false", "fn",
        "for", "if", "impl", "in", "let", "loop", "match", "mod", "move", "mut", "pub", "ref",
        "return", "self", "static", "struct", "super", "trait", "true", "type", "unsafe", "use",
        "where", "while", "async", "await", "dyn", "abstract", "become", "box", "do", "final",
        "macro", "override", "priv", "typeof", "unsized", "virtual", "yield", "try",
    ];
    if KEYWORDS.contains(&name) {
        format!("r#{name}")
    } else {
        name.to_owned()
    }
}

/// `crate::types::tcp::Ping` for `tcp.ping` of kind `Type`.
fn path_of(kind: Kind, full: &str) -> String {
    let root = match kind {
        Kind::Type => "types",
        Kind::Function => "functions",
    };
    let (ns, local) = split_ns(full);
    match ns {
        Some(ns) => format!("crate::{root}::{}::{}", snake(ns), camel(local)),
        None => format!("crate::{root}::{}", camel(local)),
    }
}

fn enum_path(boxed: &str) -> String {
    let (ns, local) = split_ns(boxed);
    match ns {
        Some(ns) => format!("crate::enums::{}::{}", snake(ns), camel(local)),
        None => format!("crate::enums::{}", camel(local)),
    }
}

/// `TcpPing` for `tcp.ping`: the variant name in `Object`.
fn object_variant(full: &str) -> String {
    full.split('.').map(camel).collect()
}

impl<'s, 'a> Generator<'s, 'a> {
    fn new(scheme: &'s Scheme<'a>) -> Self {
        let mut items = BTreeMap::new();
        let mut boxed: BTreeMap<&'a str, BTreeSet<&'a str>> = BTreeMap::new();
        for (name, ctor) in &scheme.types {
            if BUILTINS.contains(name) {
                continue;
            }
            items.insert(
                *name,
                Item {
                    kind: Kind::Type,
                    ctor,
                },
            );
            boxed.entry(ctor.output.ty).or_default().insert(name);
        }
        for (name, ctor) in &scheme.functions {
            let prev = items.insert(
                *name,
                Item {
                    kind: Kind::Function,
                    ctor,
                },
            );
            assert!(prev.is_none(), "{name} is both a type and a function");
        }
        let mut generator = Generator {
            items,
            boxed,
            defaultable: BTreeSet::new(),
        };
        generator.compute_defaultable();
        generator
    }

    /// A struct can derive `Default` when none of its fields is a boxed enum.
    fn compute_defaultable(&mut self) {
        loop {
            let mut changed = false;
            for (name, item) in &self.items {
                if self.defaultable.contains(name) {
                    continue;
                }
                if item
                    .ctor
                    .fields
                    .iter()
                    .all(|f| self.type_has_default(&f.ty))
                {
                    self.defaultable.insert(name);
                    changed = true;
                }
            }
            if !changed {
                break;
            }
        }
    }

    fn type_has_default(&self, ty: &Type<'_>) -> bool {
        match ty {
            Type::Int => true,
            Type::Named { ty } => match *ty {
                "int" | "long" | "double" | "string" | "bytes" | "int128" | "int256" | "Bool" => {
                    true
                }
                other => self.defaultable.contains(other),
            },
            Type::Generic { .. } => true,
            Type::Flagged { .. } => true,
            Type::Repeated { .. } => false,
        }
    }

    /// The Rust type of a field type.
    fn rust_type(&self, ty: &Type<'_>) -> String {
        match ty {
            Type::Int => "u32".into(),
            Type::Named { ty } => match *ty {
                "int" => "i32".into(),
                "long" => "i64".into(),
                "double" => "f64".into(),
                "string" => "String".into(),
                "bytes" => "Vec<u8>".into(),
                "int128" => "[u8; 16]".into(),
                "int256" => "[u8; 32]".into(),
                "Bool" => "bool".into(),
                other => self.named_path(other),
            },
            Type::Generic { ty, ty_param } => {
                assert_eq!(*ty, "vector", "only the bare `vector` generic is supported");
                format!("Vec<{}>", self.rust_type(ty_param))
            }
            Type::Flagged { ty, .. } => format!("Option<{}>", self.rust_type(ty)),
            Type::Repeated { .. } => panic!("repeated fields are only used by built-ins"),
        }
    }

    /// Path of a referenced constructor (bare) or boxed type (enum).
    fn named_path(&self, name: &str) -> String {
        let (_, local) = split_ns(name);
        if local.starts_with(|c: char| c.is_ascii_uppercase()) {
            assert!(self.boxed.contains_key(name), "unknown boxed type {name}");
            enum_path(name)
        } else {
            let item = self
                .items
                .get(name)
                .unwrap_or_else(|| panic!("unknown constructor {name}"));
            path_of(item.kind, name)
        }
    }

    /// Statement(s) writing `val` (an expression of type `&T`) to `out`.
    fn write_stmt(&self, ty: &Type<'_>, val: &str) -> String {
        match ty {
            Type::Int => format!("crate::codec::put_u32(out, *{val});"),
            Type::Named { ty } => match *ty {
                "int" => format!("crate::codec::put_i32(out, *{val});"),
                "long" => format!("crate::codec::put_i64(out, *{val});"),
                "double" => format!("crate::codec::put_f64(out, *{val});"),
                "string" => format!("crate::codec::put_bytes(out, {val}.as_bytes());"),
                "bytes" => format!("crate::codec::put_bytes(out, {val});"),
                "int128" | "int256" => format!("out.extend_from_slice({val});"),
                "Bool" => format!("crate::codec::put_bool(out, *{val});"),
                other => {
                    let (_, local) = split_ns(other);
                    if local.starts_with(|c: char| c.is_ascii_uppercase()) {
                        format!("crate::TlBoxed::write_boxed({val}, out);")
                    } else {
                        format!("crate::TlBare::write_bare({val}, out);")
                    }
                }
            },
            Type::Generic { ty_param, .. } => format!(
                "crate::codec::put_len(out, ({val}).len()); for item in ({val}).iter() {{ {} }}",
                self.write_stmt(ty_param, "item")
            ),
            Type::Flagged { .. } | Type::Repeated { .. } => unreachable!("handled by caller"),
        }
    }

    /// Expression reading a value of `ty` from `r`, with `?` applied.
    fn read_expr(&self, ty: &Type<'_>) -> String {
        match ty {
            Type::Int => "r.read_u32()?".into(),
            Type::Named { ty } => match *ty {
                "int" => "r.read_i32()?".into(),
                "long" => "r.read_i64()?".into(),
                "double" => "r.read_f64()?".into(),
                "string" => "r.read_string()?".into(),
                "bytes" => "r.read_bytes()?".into(),
                "int128" => "r.read_array::<16>()?".into(),
                "int256" => "r.read_array::<32>()?".into(),
                "Bool" => "r.read_bool()?".into(),
                other => {
                    let path = self.named_path(other);
                    let (_, local) = split_ns(other);
                    if local.starts_with(|c: char| c.is_ascii_uppercase()) {
                        format!("<{path} as crate::TlBoxed>::read_boxed(r)?")
                    } else {
                        format!("<{path} as crate::TlBare>::read_bare(r)?")
                    }
                }
            },
            Type::Generic { ty_param, .. } => format!(
                "r.read_vec(|r| -> Result<{}, crate::TlError> {{ Ok({}) }})?",
                self.rust_type(ty_param),
                self.read_expr(ty_param)
            ),
            Type::Flagged { .. } | Type::Repeated { .. } => unreachable!("handled by caller"),
        }
    }

    fn generate(&self) -> String {
        let mut code = String::new();
        code.push_str("// Generated by build.rs from schema/cocoon_api.tl. Do not edit.\n\n");
        self.gen_structs(&mut code, Kind::Type);
        self.gen_structs(&mut code, Kind::Function);
        self.gen_enums(&mut code);
        self.gen_object(&mut code);
        self.gen_random(&mut code);
        code
    }

    /// Expression producing a random value of `ty` from the source `s`.
    fn random_expr(&self, ty: &Type<'_>) -> String {
        match ty {
            Type::Int => "s.u32()".into(),
            Type::Named { ty } => match *ty {
                "int" => "s.u32() as i32".into(),
                "long" => "s.u64() as i64".into(),
                "double" => "s.f64()".into(),
                "string" => "s.string()".into(),
                "bytes" => "s.bytes()".into(),
                "int128" => "s.array::<16>()".into(),
                "int256" => "s.array::<32>()".into(),
                "Bool" => "s.bool()".into(),
                other => format!(
                    "<{} as crate::testing::Random>::random(s)",
                    self.named_path(other)
                ),
            },
            Type::Generic { ty_param, .. } => format!(
                "{{ let n = s.collection_len(); (0..n).map(|_| {}).collect() }}",
                self.random_expr(ty_param)
            ),
            Type::Flagged { .. } | Type::Repeated { .. } => unreachable!("handled by caller"),
        }
    }

    /// `testing::Random` impls: random values whose flags agree with their options.
    fn gen_random(&self, code: &mut String) {
        code.push_str("#[cfg(feature = \"testing\")]\nmod random_impls {\n");
        for (name, item) in &self.items {
            let path = path_of(item.kind, name);
            let _ = writeln!(
                code,
                "impl crate::testing::Random for {path} {{\n    #[allow(unused_variables)]\n    fn random(s: &mut crate::testing::Source<'_>) -> Self {{"
            );
            for field in &item.ctor.fields {
                let fname = ident(field.name.expect("named"));
                match &field.ty {
                    Type::Flagged {
                        flags_field,
                        bit,
                        ty,
                    } => {
                        let _ = writeln!(
                            code,
                            "        let {fname} = if {} & (1u32 << {bit}) != 0 {{ Some({}) }} else {{ None }};",
                            ident(flags_field),
                            self.random_expr(ty)
                        );
                    }
                    other => {
                        let _ =
                            writeln!(code, "        let {fname} = {};", self.random_expr(other));
                    }
                }
            }
            let names: Vec<String> = item
                .ctor
                .fields
                .iter()
                .map(|f| ident(f.name.expect("named")))
                .collect();
            let _ = writeln!(code, "        Self {{ {} }}\n    }}\n}}", names.join(", "));
        }
        for (ty, ctors) in &self.boxed {
            let _ = writeln!(
                code,
                "impl crate::testing::Random for {} {{\n    fn random(s: &mut crate::testing::Source<'_>) -> Self {{\n        match s.index({}) {{",
                enum_path(ty),
                ctors.len()
            );
            for (i, c) in ctors.iter().enumerate() {
                let _ = writeln!(
                    code,
                    "            {i} => Self::{}(crate::testing::Random::random(s)),",
                    camel(split_ns(c).1)
                );
            }
            let _ = writeln!(
                code,
                "            _ => Self::{}(crate::testing::Random::random(s)),\n        }}\n    }}\n}}",
                camel(split_ns(ctors.iter().next().expect("non-empty")).1)
            );
        }
        code.push_str("/// A random value of the constructor with this id, if the schema has it.\npub fn random_object(id: u32, s: &mut crate::testing::Source<'_>) -> Option<crate::Object> {\n    match id {\n");
        for (name, item) in &self.items {
            let path = path_of(item.kind, name);
            let _ = writeln!(
                code,
                "        <{path} as crate::TlConstructor>::ID => Some(crate::Object::{}(crate::testing::Random::random(s))),",
                object_variant(name)
            );
        }
        code.push_str("        _ => None,\n    }\n}\n}\n#[cfg(feature = \"testing\")]\npub use random_impls::random_object;\n");
    }

    /// Groups items of `kind` by namespace module.
    fn by_module(&self, kind: Kind) -> BTreeMap<Option<&'a str>, Vec<&'a str>> {
        let mut modules: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
        for (name, item) in &self.items {
            if item.kind == kind {
                modules.entry(split_ns(name).0).or_default().push(name);
            }
        }
        modules
    }

    fn gen_structs(&self, code: &mut String, kind: Kind) {
        let (root, what) = match kind {
            Kind::Type => ("types", "object constructor"),
            Kind::Function => ("functions", "function"),
        };
        let _ = writeln!(
            code,
            "/// One struct per TL {what} of the COCOON schema, grouped by namespace.\npub mod {root} {{"
        );
        for (ns, names) in self.by_module(kind) {
            if let Some(ns) = ns {
                let _ = writeln!(code, "/// The `{ns}.*` {what}s.\npub mod {} {{", snake(ns));
            }
            for name in names {
                self.gen_struct(code, name);
            }
            if ns.is_some() {
                code.push_str("}\n");
            }
        }
        code.push_str("}\n\n");
    }

    fn gen_struct(&self, code: &mut String, name: &str) {
        let item = &self.items[name];
        let ctor = item.ctor;
        let id = ctor.compute_tl_id();
        let struct_name = camel(split_ns(name).1);
        let decl = ctor.as_normalized();
        let derive_default = if self.defaultable.contains(name) {
            ", Default"
        } else {
            ""
        };
        let _ = writeln!(
            code,
            "/// TL `{decl}` (id `{id:08x}`).\n#[derive(Debug, Clone, PartialEq{derive_default})]\npub struct {struct_name} {{"
        );
        for field in &ctor.fields {
            let fname = field
                .name
                .expect("every field of the COCOON schema is named");
            let doc = match &field.ty {
                Type::Int => {
                    "Flag bits; bits of present optional fields are added on write.".to_string()
                }
                Type::Flagged {
                    flags_field, bit, ..
                } => {
                    format!("Present iff bit {bit} of `{flags_field}` is set.")
                }
                _ => format!("TL `{fname}:{}`.", field.ty),
            };
            let _ = writeln!(
                code,
                "    /// {doc}\n    pub {}: {},",
                ident(fname),
                self.rust_type(&field.ty)
            );
        }
        code.push_str("}\n");

        // TlConstructor
        let _ = writeln!(
            code,
            "impl crate::TlConstructor for {struct_name} {{ const ID: u32 = 0x{id:08x}; const NAME: &'static str = \"{name}\"; }}"
        );

        // TlBare
        let _ = writeln!(
            code,
            "impl crate::TlBare for {struct_name} {{\n    #[allow(unused_variables)]\n    fn write_bare(&self, out: &mut Vec<u8>) {{"
        );
        for field in &ctor.fields {
            let fname = field.name.expect("named");
            match &field.ty {
                Type::Int => {
                    let mut expr = format!("self.{}", ident(fname));
                    for dep in &ctor.fields {
                        if let Type::Flagged {
                            flags_field, bit, ..
                        } = &dep.ty
                        {
                            if *flags_field == fname {
                                let dname = ident(dep.name.expect("named"));
                                let _ = write!(
                                    expr,
                                    " | if self.{dname}.is_some() {{ 1u32 << {bit} }} else {{ 0 }}"
                                );
                            }
                        }
                    }
                    let _ = writeln!(
                        code,
                        "        let {} = {expr};\n        crate::codec::put_u32(out, {});",
                        ident(fname),
                        ident(fname)
                    );
                }
                Type::Flagged {
                    flags_field,
                    bit,
                    ty,
                } => {
                    let inner = self.rust_type(ty);
                    let _ = writeln!(
                        code,
                        "        if {flags} & (1u32 << {bit}) != 0 {{\n            let default_value: {inner};\n            let value = match &self.{f} {{ Some(v) => v, None => {{ default_value = Default::default(); &default_value }} }};\n            {stmt}\n        }}",
                        flags = ident(flags_field),
                        f = ident(fname),
                        stmt = self.write_stmt(ty, "value"),
                    );
                }
                other => {
                    let _ = writeln!(
                        code,
                        "        {}",
                        self.write_stmt(other, &format!("&self.{}", ident(fname)))
                    );
                }
            }
        }
        code.push_str("    }\n");
        let _ = writeln!(
            code,
            "    #[allow(unused_variables)]\n    fn read_bare(r: &mut crate::Reader<'_>) -> Result<Self, crate::TlError> {{"
        );
        for field in &ctor.fields {
            let fname = ident(field.name.expect("named"));
            match &field.ty {
                Type::Flagged {
                    flags_field,
                    bit,
                    ty,
                } => {
                    let _ = writeln!(
                        code,
                        "        let {fname} = if {} & (1u32 << {bit}) != 0 {{ Some({}) }} else {{ None }};",
                        ident(flags_field),
                        self.read_expr(ty)
                    );
                }
                other => {
                    let _ = writeln!(code, "        let {fname} = {};", self.read_expr(other));
                }
            }
        }
        let names: Vec<String> = ctor
            .fields
            .iter()
            .map(|f| ident(f.name.expect("named")))
            .collect();
        let _ = writeln!(
            code,
            "        Ok(Self {{ {} }})\n    }}\n}}",
            names.join(", ")
        );

        // TlBoxed
        let _ = writeln!(
            code,
            "impl crate::TlBoxed for {struct_name} {{\n    fn write_boxed(&self, out: &mut Vec<u8>) {{ crate::codec::put_u32(out, 0x{id:08x}); crate::TlBare::write_bare(self, out); }}\n    fn read_boxed(r: &mut crate::Reader<'_>) -> Result<Self, crate::TlError> {{ r.expect_id(0x{id:08x}, \"{name}\")?; <Self as crate::TlBare>::read_bare(r) }}\n}}"
        );

        if item.kind == Kind::Function {
            let answer = enum_path(ctor.output.ty);
            let _ = writeln!(
                code,
                "impl crate::TlFunction for {struct_name} {{ type Answer = {answer}; }}"
            );
        }
    }

    fn gen_enums(&self, code: &mut String) {
        code.push_str("/// One enum per boxed TL type: the constructors that may appear where the type is referenced with a capital letter.\npub mod enums {\n");
        let mut modules: BTreeMap<Option<&str>, Vec<&str>> = BTreeMap::new();
        for name in self.boxed.keys() {
            modules.entry(split_ns(name).0).or_default().push(name);
        }
        for (ns, types) in modules {
            if let Some(ns) = ns {
                let _ = writeln!(code, "/// Boxed `{ns}.*` types.\npub mod {} {{", snake(ns));
            }
            for ty in types {
                self.gen_enum(code, ty);
            }
            if ns.is_some() {
                code.push_str("}\n");
            }
        }
        code.push_str("}\n\n");
    }

    fn gen_enum(&self, code: &mut String, ty: &str) {
        let enum_name = camel(split_ns(ty).1);
        let ctors = &self.boxed[ty];
        let _ = writeln!(
            code,
            "/// TL boxed type `{ty}`.\n#[derive(Debug, Clone, PartialEq)]\npub enum {enum_name} {{"
        );
        for c in ctors {
            let _ = writeln!(
                code,
                "    /// `{c}`.\n    {}({}),",
                camel(split_ns(c).1),
                path_of(Kind::Type, c)
            );
        }
        code.push_str("}\n");
        let _ = writeln!(code, "impl {enum_name} {{");
        let _ = writeln!(
            code,
            "    /// The constructor id of the contained value.\n    pub fn id(&self) -> u32 {{ match self {{"
        );
        for c in ctors {
            let _ = writeln!(
                code,
                "        Self::{}(_) => <{} as crate::TlConstructor>::ID,",
                camel(split_ns(c).1),
                path_of(Kind::Type, c)
            );
        }
        code.push_str("    } }\n");
        let _ = writeln!(
            code,
            "    /// The TL name of the contained constructor.\n    pub fn name(&self) -> &'static str {{ match self {{"
        );
        for c in ctors {
            let _ = writeln!(
                code,
                "        Self::{}(_) => \"{c}\",",
                camel(split_ns(c).1)
            );
        }
        code.push_str("    } }\n}\n");

        let _ = writeln!(
            code,
            "impl crate::TlBoxed for {enum_name} {{\n    fn write_boxed(&self, out: &mut Vec<u8>) {{ match self {{"
        );
        for c in ctors {
            let _ = writeln!(
                code,
                "        Self::{}(v) => crate::TlBoxed::write_boxed(v, out),",
                camel(split_ns(c).1)
            );
        }
        code.push_str("    } }\n    fn read_boxed(r: &mut crate::Reader<'_>) -> Result<Self, crate::TlError> {\n        let offset = r.position();\n        match r.read_u32()? {\n");
        for c in ctors {
            let path = path_of(Kind::Type, c);
            let _ = writeln!(
                code,
                "            <{path} as crate::TlConstructor>::ID => Ok(Self::{}(<{path} as crate::TlBare>::read_bare(r)?)),",
                camel(split_ns(c).1)
            );
        }
        let _ = writeln!(
            code,
            "            id => Err(crate::TlError::UnknownConstructor {{ id, offset, expected: \"{ty}\" }}),\n        }}\n    }}\n}}"
        );
        for c in ctors {
            let _ = writeln!(
                code,
                "impl From<{}> for {enum_name} {{ fn from(v: {}) -> Self {{ Self::{}(v) }} }}",
                path_of(Kind::Type, c),
                path_of(Kind::Type, c),
                camel(split_ns(c).1)
            );
        }
    }

    fn gen_object(&self, code: &mut String) {
        code.push_str("/// Any boxed constructor of the schema, object or function: decodes a payload of unknown type.\n#[derive(Debug, Clone, PartialEq)]\npub enum Object {\n");
        for (name, item) in &self.items {
            let _ = writeln!(
                code,
                "    /// `{name}`.\n    {}({}),",
                object_variant(name),
                path_of(item.kind, name)
            );
        }
        code.push_str("}\n");
        code.push_str("impl Object {\n    /// The TL name of the contained constructor.\n    pub fn name(&self) -> &'static str { match self {\n");
        for name in self.items.keys() {
            let _ = writeln!(
                code,
                "        Self::{}(_) => \"{name}\",",
                object_variant(name)
            );
        }
        code.push_str("    } }\n}\n");
        code.push_str("impl crate::TlBoxed for Object {\n    fn write_boxed(&self, out: &mut Vec<u8>) { match self {\n");
        for name in self.items.keys() {
            let _ = writeln!(
                code,
                "        Self::{}(v) => crate::TlBoxed::write_boxed(v, out),",
                object_variant(name)
            );
        }
        code.push_str("    } }\n    fn read_boxed(r: &mut crate::Reader<'_>) -> Result<Self, crate::TlError> {\n        let offset = r.position();\n        match r.read_u32()? {\n");
        for (name, item) in &self.items {
            let path = path_of(item.kind, name);
            let _ = writeln!(
                code,
                "            <{path} as crate::TlConstructor>::ID => Ok(Self::{}(<{path} as crate::TlBare>::read_bare(r)?)),",
                object_variant(name)
            );
        }
        code.push_str("            id => Err(crate::TlError::UnknownConstructor { id, offset, expected: \"any COCOON object\" }),\n        }\n    }\n}\n");

        code.push_str("/// Every constructor of the schema as `(id, TL name)`, sorted by name.\npub const CONSTRUCTORS: &[(u32, &str)] = &[\n");
        for (name, item) in &self.items {
            let _ = writeln!(
                code,
                "    (0x{:08x}, \"{name}\"),",
                item.ctor.compute_tl_id()
            );
        }
        code.push_str("];\n");
    }
}
