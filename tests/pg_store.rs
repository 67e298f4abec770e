//! The board in PostgreSQL: `vine serve --store postgres://...` against a throwaway cluster.

mod support;

use serde_json::Value;
use support::pg::Cluster;
use support::{Server, isolated, run};

fn vine_at(url: &str, args: &[&str]) -> (i32, Value) {
    let r = run(isolated(&[("VINE_URL", url), ("VINE_RETRY_FOR", "5")])
        .arg("--json")
        .args(args));
    (r.code, r.json())
}

#[test]
fn smoke() {
    let pg = Cluster::start();
    let db = pg.create_db("smoke");
    let dir = tempfile::tempdir().unwrap();
    let s = Server::start(&dir.path().join("root"), &["--store", &db], &[]);
    let (code, v) = vine_at(&s.url, &["add", "first"]);
    assert_eq!(code, 0, "{v}");
    let (code, v) = vine_at(&s.url, &["claim", "--worker", "w1"]);
    assert_eq!(code, 0, "{v}");
    let (code, v) = vine_at(&s.url, &["status"]);
    assert_eq!(code, 0, "{v}");
    eprintln!("{v}");
}
