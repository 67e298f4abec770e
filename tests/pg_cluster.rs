//! The test PostgreSQL cluster (`tests/support/pg.rs`) itself: it starts (as an unprivileged
//! user when the test runs as root), makes databases that are reachable by URL and by socket,
//! keeps committed data across a fast restart and a stop/start, and leaves nothing behind.

mod support;

use std::path::Path;
use std::process::Command;

use support::pg::{Cluster, locate};

/// `psql URL -c SQL` (a separate client, so the URL itself is what is checked).
fn psql_url(psql: &Path, url: &str, sql: &str) -> String {
    let out = Command::new(psql)
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("psql runs");
    assert!(
        out.status.success(),
        "psql {url} -c {sql:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn a_cluster_makes_databases_and_survives_restarts() {
    let cluster = Cluster::start();
    let psql = cluster.psql_program().to_path_buf();
    let psql_url = |url: &str, sql: &str| psql_url(&psql, url, sql);
    let a = cluster.create_db("board_a");
    let b = cluster.create_db("board_b");
    assert_ne!(a, b);
    assert!(a.starts_with("postgres://vine@127.0.0.1:"), "{a}");

    // Two databases, apart: a table in one is not in the other.
    psql_url(
        &a,
        "CREATE TABLE t (id bigint PRIMARY KEY, v text); INSERT INTO t VALUES (1, 'one')",
    );
    psql_url(&b, "CREATE TABLE t (id bigint PRIMARY KEY, v text)");
    assert_eq!(psql_url(&a, "SELECT count(*) FROM t"), "1");
    assert_eq!(psql_url(&b, "SELECT count(*) FROM t"), "0");
    // The socket works too, and the role is the superuser `vine`.
    assert_eq!(cluster.psql("board_a", "SELECT current_user"), "vine\n");
    assert_eq!(
        cluster.psql("board_a", "SHOW fsync").trim(),
        "on",
        "the cluster keeps its data like a real one"
    );

    // The server runs as someone else than root (PostgreSQL refuses root).
    let server_uid = cluster.server_uid();
    if support::pg::is_root() {
        assert_ne!(
            server_uid, 0,
            "as root, the server runs as an unprivileged user"
        );
    }

    cluster.restart_fast();
    assert_eq!(psql_url(&a, "SELECT v FROM t WHERE id = 1"), "one");
    psql_url(&a, "INSERT INTO t VALUES (2, 'two')");

    cluster.stop();
    let refused = Command::new(&psql)
        .args(["-X", "-q", "-A", "-t", &a, "-c", "SELECT 1"])
        .output()
        .expect("psql runs");
    assert!(
        !refused.status.success(),
        "a stopped cluster refuses connections"
    );
    cluster.start_again();
    assert_eq!(psql_url(&a, "SELECT count(*) FROM t"), "2");

    let dir = cluster.sock_dir();
    assert!(dir.exists());
    drop(cluster);
    assert!(!dir.exists(), "the cluster's directory is removed on drop");
}

#[test]
fn a_machine_without_postgresql_fails_with_the_install_command() {
    let empty = tempfile::tempdir().expect("tempdir");
    let e = locate(empty.path().as_os_str(), empty.path()).expect_err("nothing there");
    assert!(e.contains("PostgreSQL is not installed"), "{e}");
    assert!(e.contains("scripts/install-postgres.sh"), "{e}");
    assert!(e.contains("sudo apt-get install -y postgresql"), "{e}");

    // Debian's layout: the newest complete N/bin under the versions directory.
    let versions = tempfile::tempdir().expect("tempdir");
    for (v, programs) in [
        ("13", &["initdb", "pg_ctl", "postgres"][..]),
        ("15", &["initdb", "pg_ctl", "postgres"][..]),
        ("16", &["initdb"][..]),
    ] {
        let bin = versions.path().join(v).join("bin");
        std::fs::create_dir_all(&bin).expect("mkdir");
        for p in programs {
            std::fs::write(bin.join(p), "").expect("write");
        }
    }
    let found = locate(empty.path().as_os_str(), versions.path()).expect("found");
    assert_eq!(found, versions.path().join("15/bin"));
    // `initdb` on PATH as a link wins, and its real directory is used.
    let path = tempfile::tempdir().expect("tempdir");
    std::os::unix::fs::symlink(
        versions.path().join("13/bin/initdb"),
        path.path().join("initdb"),
    )
    .expect("symlink");
    let found = locate(path.path().as_os_str(), versions.path()).expect("found");
    assert_eq!(
        found,
        versions.path().join("13/bin").canonicalize().unwrap()
    );
}
