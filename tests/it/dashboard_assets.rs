//! Every file of `static/` (the page is ES modules in several files now) is served by the binary,
//! JavaScript as JavaScript (browsers refuse a module script of another MIME type), under the
//! Content-Security-Policy that allows same-origin scripts only.

use std::path::{Path, PathBuf};

use crate::common::*;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("static/ is readable") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn every_static_file_is_served_with_its_type() {
    let server = InProcess::start(&[]);
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("static");
    let mut all = Vec::new();
    files(&root, &mut all);
    let modules = all
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "js"))
        .count();
    assert!(
        modules > 5,
        "the page is split into modules: {modules} .js files"
    );
    for path in all {
        let rel = path
            .strip_prefix(&root)
            .expect("under static/")
            .to_string_lossy()
            .replace('\\', "/");
        let res = http_request(server.http, "GET", &format!("/{rel}"), &[], b"").await;
        assert_eq!(res.status, 200, "/{rel}");
        let header = |name: &str| {
            res.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        if rel.ends_with(".js") {
            assert!(
                header("content-type").starts_with("text/javascript"),
                "/{rel}: {}",
                header("content-type")
            );
        }
        let csp = header("content-security-policy");
        assert!(csp.contains("script-src 'self'"), "/{rel}: {csp}");
        assert_eq!(
            res.body.len(),
            std::fs::read(&path).expect("readable").len(),
            "/{rel} is the file as built"
        );
    }
    // The page loads its entry point as a module.
    let index = http_request(server.http, "GET", "/", &[], b"").await;
    assert!(index
        .body
        .contains(r#"<script type="module" src="app.js"></script>"#));
}
