//! The JSON Schemas in `schema/` (manifest and secondary config), checked
//! with an outside validator (Python's `jsonschema`, which `cargo xtask
//! test` installs from PyPI): every example and template is valid, every
//! table has exactly the keys the builder's parser accepts (its "unknown
//! key ..., expected one of ..." message lists them), and a document with
//! an unknown key in any table is refused by both.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use cairn_e2e::root;
use serde_json::Value;

/// Validates each TOML file against `schema` with Python's jsonschema
/// (Draft 7); returns (file, errors) for each file, errors empty when valid.
fn validate(schema: &Path, files: &[PathBuf]) -> Vec<(PathBuf, String)> {
    const SCRIPT: &str = r#"
import json, sys, tomllib
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft7Validator.check_schema(schema)
v = jsonschema.Draft7Validator(schema)
for f in sys.argv[2:]:
    doc = tomllib.load(open(f, "rb"))
    errs = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in v.iter_errors(doc)]
    print(json.dumps([f, "; ".join(errs)]))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(SCRIPT)
        .arg(schema)
        .args(files)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "the validator failed (is python3-jsonschema installed? `cargo xtask deps`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: (PathBuf, String) = serde_json::from_str(l).unwrap();
            v
        })
        .collect()
}

fn schema(name: &str) -> (PathBuf, Value) {
    let p = root().join("schema").join(name);
    let v = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    (p, v)
}

/// The object schema at `path` (table names; an array of tables is
/// followed to its items, a map to its values).
fn table<'a>(schema: &'a Value, path: &[&str]) -> &'a Value {
    let mut s = schema;
    for key in path {
        s = &s["properties"][key];
        if s["type"] == "array" {
            s = &s["items"];
        }
        if s.get("properties").is_none() && s["additionalProperties"].is_object() {
            s = &s["additionalProperties"];
        }
    }
    assert_eq!(s["type"], "object", "{path:?} is not a table in the schema");
    s
}

fn schema_keys(schema: &Value, path: &[&str]) -> BTreeSet<String> {
    let t = table(schema, path);
    assert_eq!(
        t["additionalProperties"],
        Value::Bool(false),
        "{path:?} accepts unknown keys"
    );
    t["properties"]
        .as_object()
        .unwrap()
        .keys()
        .cloned()
        .collect()
}

/// The keys a parser error "unknown key `x` ..., expected one of `a`, `b`"
/// says are accepted.
fn expected_keys(msg: &str) -> BTreeSet<String> {
    let (_, rest) = msg
        .split_once("expected")
        .unwrap_or_else(|| panic!("no list of expected keys in: {msg}"));
    let rest = rest.lines().next().unwrap_or("");
    rest.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_string)
        .collect()
}

/// (table path, a valid document whose table at that path is the last one
/// written, so a key appended at the end of the document lands in it).
const MANIFEST_TABLES: &[(&[&str], &str)] = &[
    (&[], "hostname = \"x\"\n"),
    (&["kernel"], "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n"),
    (&["initramfs"], "[initramfs]\ncompression = \"gzip\"\n"),
    (&["service"], "[[service]]\nname = \"a\"\nexec = [\"/bin/a\"]\n"),
    (&["file"], "[[file]]\nsrc = \"a\"\ndst = \"/a\"\n"),
    (&["binary"], "[[binary]]\npath = \"/bin/a\"\n"),
    (&["disk"], "[disk]\nformat = \"raw\"\n"),
    (&["iso"], "[iso]\nbios = true\n"),
    (&["update"], "[update]\nversion = 1\nurl = \"http://10.0.0.1/r\"\nkeys = [\"k\"]\n"),
    (&["update", "health"], "[update]\nversion = 1\nurl = \"http://10.0.0.1/r\"\nkeys = [\"k\"]\n[update.health]\nnetwork = true\n"),
    (&["update", "watchdog"], "[update]\nversion = 1\nurl = \"http://10.0.0.1/r\"\nkeys = [\"k\"]\n[update.watchdog]\ntimeout = \"30s\"\n"),
    (&["netboot"], "[netboot]\nurl = \"http://10.0.0.1/nodes/\"\nkeys = [\"k\"]\n"),
    (&["partition"], "[[partition]]\nlabel = \"DATA\"\nsize = \"8M\"\nfs = \"ext4\"\n"),
    (&["mount"], "[[mount]]\nlabel = \"DATA\"\npath = \"/data\"\nfs = \"ext4\"\n"),
    (&["config"], "[config]\nmount = \"/data\"\n"),
    (&["network"], "[[network]]\nmatch = { name = \"eth0\" }\ndhcp4 = true\n"),
    (&["network", "match"], "[[network]]\ndhcp4 = true\n[network.match]\nname = \"eth0\"\n"),
    (&["network", "routes"], "[[network]]\nmatch = { name = \"eth0\" }\naddresses = [\"10.0.0.2/24\"]\n[[network.routes]]\nto = \"10.1.0.0/16\"\nvia = \"10.0.0.1\"\n"),
    (&["net"], "[net]\nonline_timeout = 5\n"),
    (&["user"], "[[user]]\nname = \"app\"\nuid = 1000\n"),
    (&["group"], "[[group]]\nname = \"app\"\ngid = 1000\n"),
    (&["log"], "[log]\nlines = 10\n"),
    (&["shell"], "[shell]\nexec = [\"/bin/sh\"]\npassword_hash = \"x\"\n"),
    (&["sign"], "[sign]\nkey = \"k\"\ncert = \"c\"\n"),
];

const CONFIG_TABLES: &[(&[&str], &str)] = &[
    (&[], "\n"),
    (
        &["network"],
        "[[network]]\nmatch = { name = \"eth0\" }\ndhcp4 = true\n",
    ),
    (
        &["network", "match"],
        "[[network]]\ndhcp4 = true\n[network.match]\nname = \"eth0\"\n",
    ),
    (&["net"], "[net]\nonline_timeout = 5\n"),
    (&["service"], "[service.web]\nenabled = false\n"),
];

/// For each table: the schema's keys are the parser's, a document with
/// the table is valid, and one with an unknown key there is refused by
/// both.
fn check_tables(
    schema_file: &str,
    tables: &[(&[&str], &str)],
    prefix: &str,
    parse: impl Fn(&str) -> Result<(), String>,
) {
    let (path, s) = schema(schema_file);
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (tpath, doc)) in tables.iter().enumerate() {
        let (doc, bad) = if tpath.is_empty() {
            // Top-level keys come before any table.
            let doc = format!("{doc}{prefix}");
            (doc.clone(), format!("bogus_key = 1\n{doc}"))
        } else {
            let doc = if tpath[0] == "kernel" {
                doc.to_string()
            } else {
                format!("{prefix}{doc}")
            };
            let bad = format!("{doc}bogus_key = 1\n");
            (doc, bad)
        };
        let msg = parse(&bad).expect_err(&format!("{tpath:?}: the parser took an unknown key"));
        assert!(msg.contains("unknown key `bogus_key`"), "{tpath:?}: {msg}");
        let mut expected = expected_keys(&msg);
        expected.remove("bogus_key");
        assert_eq!(
            schema_keys(&s, tpath),
            expected,
            "{schema_file}: the keys of {tpath:?} differ from what the parser accepts"
        );
        for (kind, text) in [("good", &doc), ("bad", &bad)] {
            let f = dir.path().join(format!("{i}-{kind}.toml"));
            std::fs::write(&f, text).unwrap();
            files.push((f, kind, tpath));
        }
    }
    let paths: Vec<PathBuf> = files.iter().map(|(f, _, _)| f.clone()).collect();
    let results = validate(&path, &paths);
    assert_eq!(results.len(), files.len());
    for ((f, kind, tpath), (_, errors)) in files.iter().zip(&results) {
        let text = std::fs::read_to_string(f).unwrap();
        match *kind {
            "good" => assert!(errors.is_empty(), "{tpath:?}: {errors}\n{text}"),
            _ => assert!(
                errors.contains("Additional properties are not allowed ('bogus_key'"),
                "{tpath:?}: the schema took an unknown key ({errors:?})\n{text}"
            ),
        }
    }
}

#[test]
fn manifest_schema_has_the_parsers_keys_and_refuses_unknown_ones() {
    let prefix = "name = \"x\"\n[kernel]\npackage = \"linux-image-cloud-amd64\"\n";
    check_tables("cairn.schema.json", MANIFEST_TABLES, prefix, |text| {
        cairn_manifest::Manifest::parse(text, Path::new("/x/cairn.toml"))
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

#[test]
fn secondary_config_schema_has_the_parsers_keys_and_refuses_unknown_ones() {
    check_tables("cairn-config.schema.json", CONFIG_TABLES, "", |text| {
        cairn_manifest::secondary::parse(text, Path::new("/config/cairn.toml"))
            .map(drop)
            .map_err(|e| e.to_string())
    });
}

/// Every example, bench appliance and `cairn new` template (named `x`)
/// is valid.
#[test]
fn every_example_and_template_is_valid() {
    let mut manifests = Vec::new();
    for e in std::fs::read_dir(root().join("examples")).unwrap() {
        let p = e.unwrap().path().join("cairn.toml");
        if p.is_file() {
            manifests.push(p);
        }
    }
    for e in std::fs::read_dir(root().join("bench")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            manifests.push(p);
        }
    }
    let dir = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(root().join("crates/cairn/templates")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "toml") {
            let text = std::fs::read_to_string(&p).unwrap().replace("@NAME@", "x");
            let copy = dir.path().join(p.file_name().unwrap());
            std::fs::write(&copy, text).unwrap();
            manifests.push(copy);
        }
    }
    assert!(manifests.len() >= 12, "{manifests:?}");
    let (schema, _) = schema("cairn.schema.json");
    for (f, errors) in validate(&schema, &manifests) {
        assert!(errors.is_empty(), "{}: {errors}", f.display());
    }
}
