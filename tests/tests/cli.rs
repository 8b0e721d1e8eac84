//! The CLI's own documentation: shell completions and man pages generated
//! from its definition, and the schemas it prints.

use std::time::Duration;

use cairn_e2e::{build, cairn, example_with, root, run_with_timeout, Outcome};

fn run(args: &[&str]) -> Outcome {
    let mut c = cairn();
    c.args(args);
    let o = run_with_timeout(c, Duration::from_secs(30));
    o.assert_ok();
    o
}

#[test]
fn completions_for_every_shell() {
    for (shell, marker) in [
        ("bash", "_cairn()"),
        ("zsh", "#compdef cairn"),
        ("fish", "complete -c cairn"),
    ] {
        let o = run(&["completions", shell]);
        o.assert_stdout_has(marker);
        // Every command is there, the new ones too.
        for cmd in ["build", "new", "diff", "schema", "inspect"] {
            o.assert_stdout_has(cmd);
        }
    }
    let o = run(&["completions", "bash"]);
    // Template names complete as values of --template.
    o.assert_stdout_has("hello net web disk");
}

#[test]
fn man_pages() {
    let o = run(&["man"]);
    o.assert_stdout_has(".TH cairn 1");
    let dir = tempfile::tempdir().unwrap();
    let o = run(&["man", "--dir", dir.path().to_str().unwrap()]);
    for page in [
        "cairn",
        "cairn-build",
        "cairn-new",
        "cairn-diff",
        "cairn-run",
    ] {
        let p = dir.path().join(format!("{page}.1"));
        o.assert_stdout_has(&p.display().to_string());
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(&format!(".TH {page} 1")), "{page}: {text}");
    }
    let build = std::fs::read_to_string(dir.path().join("cairn-build.1")).unwrap();
    assert!(build.contains("\\-\\-sbom"), "{build}");
}

#[test]
fn schema_is_the_one_in_the_repository() {
    let o = run(&["schema"]);
    let file = std::fs::read_to_string(root().join("schema/cairn.schema.json")).unwrap();
    assert_eq!(o.stdout, file);
    let o = run(&["schema", "--config"]);
    let file = std::fs::read_to_string(root().join("schema/cairn-config.schema.json")).unwrap();
    assert_eq!(o.stdout, file);
}

/// Not on a terminal, progress is plain lines: no control codes on
/// stderr, and the slow step (compressing new contents) says how long it
/// took.
#[test]
fn progress_is_plain_lines_off_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    // Contents no build has compressed before: the step is not cached.
    let nonce = "[[file]]\nsrc = \"nonce\"\ndst = \"/etc/nonce\"\n";
    std::fs::write(
        dir.path().join("nonce"),
        format!("{:?}", std::time::SystemTime::now()),
    )
    .unwrap();
    let m = example_with("hello", dir.path(), nonce);
    let o = build(&m, &dir.path().join("out"));
    o.assert_ok();
    assert!(!o.stderr.contains('\x1b'), "{:?}", o.stderr);
    for l in o.stderr.lines() {
        assert!(l.starts_with("cairn: ") && l.contains(" took "), "{l}");
    }
}
