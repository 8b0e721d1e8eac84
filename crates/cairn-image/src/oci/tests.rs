use super::*;

/// A layer tar from (path, kind) pairs: "d" dir, "f:DATA" file,
/// "l:TARGET" symlink, "h:TARGET" hard link, "c:MAJ:MIN" char device.
fn layer(entries: &[(&str, &str)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, spec) in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o755);
        h.set_uid(1000);
        h.set_gid(100);
        h.set_size(0);
        let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
        match kind {
            "d" => h.set_entry_type(tar::EntryType::Directory),
            "f" => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(arg.len() as u64);
            }
            "l" => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_link_name(arg).unwrap();
            }
            "h" => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_link_name(arg).unwrap();
            }
            "c" => {
                h.set_entry_type(tar::EntryType::Char);
                let (a, b) = arg.split_once(':').unwrap();
                h.set_device_major(a.parse().unwrap()).unwrap();
                h.set_device_minor(b.parse().unwrap()).unwrap();
            }
            _ => unreachable!(),
        }
        // Raw name bytes: set_path refuses `..`, which we want to test.
        let name = h.as_old_mut().name.as_mut();
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_cksum();
        let data: &[u8] = if kind == "f" { arg.as_bytes() } else { &[] };
        b.append(&h, data).unwrap();
    }
    b.into_inner().unwrap()
}

fn file(t: &Tree, p: &str) -> Option<String> {
    match &t.nodes.get(p)?.kind {
        NodeKind::File(d) => Some(String::from_utf8_lossy(d).into_owned()),
        _ => None,
    }
}

#[test]
fn layers_apply_in_order_with_whiteouts_and_opaque_dirs() {
    let mut t = Tree::default();
    t.apply_layer(&layer(&[
        ("etc/", "d"),
        ("etc/motd", "f:one"),
        ("etc/gone", "f:x"),
        ("opt/", "d"),
        ("opt/old/", "d"),
        ("opt/old/a", "f:a"),
        ("opt/keep", "f:k"),
    ]))
    .unwrap();
    t.apply_layer(&layer(&[
        ("etc/motd", "f:two"),
        ("etc/.wh.gone", "f:"),
        ("opt/new", "f:n"),
        ("opt/.wh..wh..opq", "f:"),
    ]))
    .unwrap();
    assert_eq!(file(&t, "etc/motd").as_deref(), Some("two"));
    assert!(!t.nodes.contains_key("etc/gone"));
    assert!(!t.nodes.contains_key("etc/.wh.gone"));
    // Opaque: the lower layer's children are gone, this layer's stay,
    // whatever the order inside the layer.
    assert!(!t.nodes.contains_key("opt/old"));
    assert!(!t.nodes.contains_key("opt/old/a"));
    assert!(!t.nodes.contains_key("opt/keep"));
    assert_eq!(file(&t, "opt/new").as_deref(), Some("n"));
    let n = &t.nodes["etc/motd"];
    assert_eq!((n.mode, n.uid, n.gid), (0o755, 1000, 100));
}

#[test]
fn a_file_replaces_a_directory_and_whiteout_removes_subtrees() {
    let mut t = Tree::default();
    t.apply_layer(&layer(&[
        ("a/", "d"),
        ("a/b", "f:1"),
        ("c/", "d"),
        ("c/d", "f:2"),
    ]))
    .unwrap();
    t.apply_layer(&layer(&[("a", "f:now a file"), (".wh.c", "f:")]))
        .unwrap();
    assert_eq!(file(&t, "a").as_deref(), Some("now a file"));
    assert!(!t.nodes.contains_key("a/b"));
    assert!(!t.nodes.contains_key("c") && !t.nodes.contains_key("c/d"));
}

#[test]
fn escapes_are_refused() {
    let mut t = Tree::default();
    let e = t
        .apply_layer(&layer(&[("../etc/passwd", "f:x")]))
        .unwrap_err();
    assert!(e.to_string().contains("`..`"), "{e}");
    let e = t.apply_layer(&layer(&[("a/../../x", "f:x")])).unwrap_err();
    assert!(e.to_string().contains("a/../../x"), "{e}");
    // An absolute symlink, then a write through it.
    let mut t = Tree::default();
    let e = t
        .apply_layer(&layer(&[("etc", "l:/etc"), ("etc/passwd", "f:x")]))
        .unwrap_err();
    assert!(e.to_string().contains("symlink `etc` -> `/etc`"), "{e}");
    // Also across layers, and with a relative target.
    let mut t = Tree::default();
    t.apply_layer(&layer(&[("up", "l:../../..")])).unwrap();
    let e = t.apply_layer(&layer(&[("up/x", "f:x")])).unwrap_err();
    assert!(
        e.to_string().contains("goes through the symlink `up`"),
        "{e}"
    );
    // Hard links may not leave the tree either.
    let mut t = Tree::default();
    let e = t
        .apply_layer(&layer(&[("x", "h:../../etc/shadow")]))
        .unwrap_err();
    assert!(e.to_string().contains("leaves the image root"), "{e}");
}

#[test]
fn links_devices_and_archive_output() {
    let mut t = Tree::default();
    t.apply_layer(&layer(&[
        ("bin/", "d"),
        ("bin/busybox", "f:BB"),
        ("bin/sh", "h:bin/busybox"),
        ("bin/ls", "l:busybox"),
        ("dev/", "d"),
        ("dev/null", "c:1:3"),
    ]))
    .unwrap();
    let mut a = cpio::Archive::new();
    t.add_to_archive(&mut a, "/containers/x").unwrap();
    let bytes = a.to_bytes(0);
    let entries = cpio::read(&bytes).unwrap();
    let get = |p: &str| entries.iter().find(|e| e.path == p).unwrap();
    let sh = get("containers/x/bin/sh");
    assert_eq!(sh.data, b"BB");
    assert_eq!(sh.uid, 1000);
    assert_eq!(get("containers/x/bin/ls").data, b"busybox");
    let null = get("containers/x/dev/null");
    assert_eq!(
        (null.mode & 0o170000, null.rdev_major, null.rdev_minor),
        (0o020000, 1, 3)
    );
    // The same inode number and nlink 2 for both names, in the raw header.
    let header_of = |name: &str| {
        let pos = bytes
            .windows(name.len() + 1)
            .position(|w| &w[..name.len()] == name.as_bytes() && w[name.len()] == 0)
            .unwrap();
        let h = &bytes[pos - 110..pos];
        (
            String::from_utf8_lossy(&h[6..14]).into_owned(),
            String::from_utf8_lossy(&h[38..46]).into_owned(),
        )
    };
    let (ino_a, nlink_a) = header_of("containers/x/bin/busybox");
    let (ino_b, nlink_b) = header_of("containers/x/bin/sh");
    assert_eq!(ino_a, ino_b);
    assert_eq!(
        (nlink_a.as_str(), nlink_b.as_str()),
        ("00000002", "00000002")
    );
}

fn sha256(d: &[u8]) -> String {
    hash("sha256", d)
}

/// Writes an OCI layout with one image of `layers` (gzip'd) into `dir`.
fn oci_layout(dir: &Path, layers: &[Vec<u8>]) -> (String, Vec<String>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |d: &[u8]| {
        let digest = sha256(d);
        std::fs::write(blobs.join(&digest[7..]), d).unwrap();
        digest
    };
    let mut descs = Vec::new();
    let mut diff_ids = Vec::new();
    let mut digests = Vec::new();
    for l in layers {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, l).unwrap();
        let gz = gz.finish().unwrap();
        let d = put(&gz);
        digests.push(d.clone());
        diff_ids.push(format!("\"{}\"", sha256(l)));
        descs.push(format!(
            r#"{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":{}}}"#,
            gz.len()
        ));
    }
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","config":{{"Entrypoint":["/bin/sh"],"Cmd":["-c","echo hi"],"Env":["PATH=/bin"],"User":"1000:100","WorkingDir":"/srv"}},"rootfs":{{"type":"layers","diff_ids":[{}]}}}}"#,
        diff_ids.join(",")
    );
    let cd = put(config.as_bytes());
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{cd}","size":{}}},"layers":[{}]}}"#,
        config.len(),
        descs.join(",")
    );
    let md = put(manifest.as_bytes());
    std::fs::write(
        dir.join("index.json"),
        format!(
            r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{md}","size":{},"annotations":{{"org.opencontainers.image.ref.name":"v1"}}}}]}}"#,
            manifest.len()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    (md, digests)
}

fn read_dir(dir: &Path, tag: Option<&str>) -> Result<Image, OciError> {
    read(&ImageRef::OciLayout {
        dir: dir.to_path_buf(),
        tag: tag.map(String::from),
    })
}

#[test]
fn oci_layout_is_read_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let l1 = layer(&[
        ("bin/", "d"),
        ("bin/sh", "f:SH"),
        ("etc/", "d"),
        ("etc/x", "f:1"),
    ]);
    let l2 = layer(&[("etc/.wh.x", "f:")]);
    let (md, layers) = oci_layout(tmp.path(), &[l1, l2]);
    let img = read_dir(tmp.path(), Some("v1")).unwrap();
    assert_eq!(img.manifest_digest.as_deref(), Some(md.as_str()));
    assert_eq!(img.layers.len(), 2);
    assert_eq!(img.config.entrypoint, ["/bin/sh"]);
    assert_eq!(img.config.user.as_deref(), Some("1000:100"));
    assert_eq!(img.config.workdir.as_deref(), Some("/srv"));
    assert!(img.tree.nodes.contains_key("bin/sh"));
    assert!(!img.tree.nodes.contains_key("etc/x"));
    // The only manifest is found without a tag too; a wrong tag is named.
    read_dir(tmp.path(), None).unwrap();
    let e = read_dir(tmp.path(), Some("v2")).unwrap_err();
    assert!(
        e.to_string().contains("no manifest tagged `v2` (tags: v1)"),
        "{e}"
    );

    // A changed layer: digest mismatch, naming the image and the blob.
    let blob = tmp.path().join("blobs/sha256").join(&layers[1][7..]);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&blob, &bytes).unwrap();
    let e = read_dir(tmp.path(), None).unwrap_err();
    assert_eq!(e.blob.as_deref(), Some(layers[1].as_str()));
    assert!(
        matches!(e.problem, OciProblem::DigestMismatch { .. }),
        "{e}"
    );
    assert!(
        e.to_string().starts_with(&format!(
            "image oci:{}, {}",
            tmp.path().display(),
            layers[1]
        )),
        "{e}"
    );
    // A missing one.
    std::fs::remove_file(&blob).unwrap();
    let e = read_dir(tmp.path(), None).unwrap_err();
    assert_eq!(e.problem, OciProblem::MissingBlob, "{e}");
    assert_eq!(e.blob.as_deref(), Some(layers[1].as_str()));
}

#[test]
fn unknown_media_type_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    oci_layout(tmp.path(), &[layer(&[("a", "f:1")])]);
    // Rewrite the manifest with another layer media type (and fix the index).
    let index = std::fs::read_to_string(tmp.path().join("index.json")).unwrap();
    let md = index
        .split("\"digest\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    let mpath = tmp.path().join("blobs/sha256").join(&md[7..]);
    let m = std::fs::read_to_string(&mpath)
        .unwrap()
        .replace("tar+gzip", "tar+lz4");
    let nd = sha256(m.as_bytes());
    std::fs::write(tmp.path().join("blobs/sha256").join(&nd[7..]), &m).unwrap();
    let size = index
        .split("\"size\":")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();
    let index = index.replace(&md, &nd).replace(
        &format!("\"size\":{size}"),
        &format!("\"size\":{}", m.len()),
    );
    std::fs::write(tmp.path().join("index.json"), index).unwrap();
    let e = read_dir(tmp.path(), None).unwrap_err();
    assert_eq!(
        e.problem,
        OciProblem::UnknownMediaType("application/vnd.oci.image.layer.v1.tar+lz4".into()),
        "{e}"
    );
    assert!(e.blob.as_deref().unwrap().starts_with("sha256:"));
}

#[test]
fn users_resolve_against_the_image() {
    let mut t = Tree::default();
    t.apply_layer(&layer(&[
        (
            "etc/passwd",
            "f:root:x:0:0::/root:/bin/sh\nweb:x:1000:1001::/srv:/bin/sh\n",
        ),
        ("etc/group", "f:root:x:0:\nstaff:x:50:\n"),
    ]))
    .unwrap();
    assert_eq!(t.resolve_user("web").unwrap(), (1000, 1001));
    assert_eq!(t.resolve_user("1000").unwrap(), (1000, 1001));
    assert_eq!(t.resolve_user("4242").unwrap(), (4242, 4242));
    assert_eq!(t.resolve_user("web:staff").unwrap(), (1000, 50));
    assert_eq!(t.resolve_user("7:8").unwrap(), (7, 8));
    assert!(t.resolve_user("nobody").is_err());
}
