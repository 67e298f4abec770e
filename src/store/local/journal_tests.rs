//! The journal and its checkpoints on real files: what a change writes, what another handle
//! sees, torn records, a crash between a checkpoint's files and its new journal, log entries
//! a crashed writer did not append, damage and repair.

use std::fs;
use std::path::Path;

use super::tests::add;
use super::*;
use crate::op::{self, NewTask};
use crate::store::paths::{ARCHIVE, JOURNAL};
use crate::store::{journal, jsonl, log};

/// A board and a handle that writes checkpoints only when told to or dropped (no thread
/// racing the test's counts).
fn board() -> (tempfile::TempDir, LocalStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::init(dir.path(), None).unwrap();
    store.checkpointer.set_quiet(false);
    (dir, store)
}

/// Another handle on the board (another process), without the quiet checkpoints.
fn open(dir: &Path) -> LocalStore {
    let store = LocalStore::open(dir).unwrap();
    store.checkpointer.set_quiet(false);
    store
}

fn claim(store: &LocalStore, w: &str) -> Option<u64> {
    match store.execute(Op::Claim(op::Claim { worker: w.into() })) {
        Ok(Reply::Claimed { claim, .. }) => claim.map(|c| c.task.id),
        other => panic!("{other:?}"),
    }
}

fn send(store: &LocalStore, text: &str) {
    let op = Op::Send(op::Send {
        agent: "w1".into(),
        message: text.into(),
        task: None,
    });
    store.execute(op).unwrap();
}

/// The descriptions and statuses on the queue, as a fresh handle (another process) reads them.
fn seen_fresh(dir: &Path) -> Vec<(String, String)> {
    let fresh = LocalStore::open(dir).unwrap();
    fresh
        .queue()
        .unwrap()
        .into_iter()
        .map(|t| (t.description, format!("{:?}", t.status)))
        .collect()
}

/// The records the journal holds (lines after the header, before the room for more).
fn records(dir: &Path) -> usize {
    let text = fs::read_to_string(dir.join(JOURNAL)).unwrap_or_default();
    text.trim_end_matches('\0')
        .lines()
        .count()
        .saturating_sub(1)
}

/// Where the journal's records end: its first zero byte (the room after them), else its end.
fn records_end(dir: &Path) -> u64 {
    let bytes = fs::read(dir.join(JOURNAL)).unwrap();
    bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len()) as u64
}

/// Writes `bytes` where the journal's records end, as an append does.
fn write_at_end(dir: &Path, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new()
        .write(true)
        .open(dir.join(JOURNAL))
        .unwrap();
    f.write_all_at(bytes, records_end(dir)).unwrap();
}

fn queue_file(dir: &Path) -> Vec<Task> {
    serde_json::from_slice(&fs::read(dir.join(QUEUE)).unwrap()).unwrap()
}

fn log_seqs(dir: &Path) -> Vec<u64> {
    log::all(&dir.join(LOG), &mut Damages::refuse())
        .unwrap()
        .iter()
        .filter_map(|m| m.seq)
        .collect()
}

/// A handle that does not write the checkpoint when dropped: as a process killed after its
/// changes (the checkpointer's thread and drop are what a kill stops).
fn killed(store: LocalStore) {
    std::mem::forget(store);
}

#[test]
fn a_change_is_one_record_and_the_files_catch_up_at_a_checkpoint() {
    let (dir, store) = board();
    let a = add(&store, "a");
    add(&store, "b");
    assert_eq!(claim(&store, "w1"), Some(a));
    assert_eq!(records(dir.path()), 3, "one record a change");
    // The files are the checkpoint: not yet written; another handle sees the board anyway.
    assert!(queue_file(dir.path()).is_empty());
    assert_eq!(
        seen_fresh(dir.path()),
        vec![
            ("a".into(), "InProgress".into()),
            ("b".into(), "Pending".into())
        ]
    );
    {
        let _lock = store.lock().unwrap();
        store.checkpoint_held().unwrap();
    }
    assert_eq!(records(dir.path()), 0);
    let q = queue_file(dir.path());
    assert_eq!(q.len(), 2);
    assert_eq!(q[0].claimed_by.as_deref(), Some("w1"));
    // The record of a claim is small whatever the queue holds.
    for i in 0..200 {
        add(&store, &format!("filler {i}"));
    }
    let before = records_end(dir.path());
    claim(&store, "w2").unwrap();
    let grew = records_end(dir.path()) - before;
    assert!(grew < 4096, "a claim appended {grew} bytes");
}

#[test]
fn the_last_handle_dropped_writes_the_checkpoint() {
    let (dir, store) = board();
    add(&store, "a");
    let clone = store.clone();
    drop(store);
    assert_eq!(records(dir.path()), 1, "a clone still runs");
    drop(clone);
    assert_eq!(records(dir.path()), 0);
    assert_eq!(queue_file(dir.path()).len(), 1);
}

#[test]
fn a_quiet_board_is_checkpointed_within_a_second() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::init(dir.path(), None).unwrap();
    add(&store, "a");
    let start = std::time::Instant::now();
    while records(dir.path()) > 0 {
        assert!(
            start.elapsed() < std::time::Duration::from_secs(10),
            "no checkpoint came"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(queue_file(dir.path()).len(), 1);
    drop(store);
}

#[test]
fn a_command_writes_the_files_while_the_journal_is_empty() {
    let (dir, store) = board();
    let cli = open(dir.path()).committing(Commit::Files);
    add(&cli, "direct");
    assert_eq!(records(dir.path()), 0);
    assert_eq!(queue_file(dir.path()).len(), 1);
    // A long-lived handle that wrote records: the command adds a record too (the files would
    // not hold the records before it).
    add(&store, "journaled");
    add(&cli, "after");
    assert_eq!(records(dir.path()), 2);
    assert_eq!(seen_fresh(dir.path()).len(), 3);
    // And the long-lived handle sees the command's change.
    assert_eq!(store.queue().unwrap().len(), 3);
    killed(store);
}

#[test]
fn a_torn_last_record_is_left_out_by_readers_and_cut_by_the_next_writer() {
    let (dir, store) = board();
    add(&store, "kept");
    killed(store);
    let jpath = dir.path().join(JOURNAL);
    let file = fs::read(&jpath).unwrap();
    let end = records_end(dir.path()) as usize;
    assert!(
        file.len() > end && file[end..].iter().all(|&b| b == 0),
        "the journal has room after its records"
    );
    let whole = file[..end].to_vec();
    // Half of a record that was being appended when the writer died.
    let last = whole[..whole.len() - 1]
        .iter()
        .rposition(|&b| b == b'\n')
        .unwrap();
    let record = whole[last + 1..].to_vec();
    write_at_end(dir.path(), &record[..record.len() / 2]);
    assert_eq!(
        seen_fresh(dir.path()),
        vec![("kept".into(), "Pending".into())]
    );
    let writer = open(dir.path());
    add(&writer, "next");
    let after = fs::read(&jpath).unwrap();
    assert!(
        after.starts_with(&whole),
        "the torn part was cut, the rest kept"
    );
    assert_eq!(records(dir.path()), 2);
    assert_eq!(
        seen_fresh(dir.path()),
        vec![
            ("kept".into(), "Pending".into()),
            ("next".into(), "Pending".into())
        ]
    );
    killed(writer);
}

#[test]
fn what_a_machine_crash_left_in_the_room_after_the_records_is_cut_before_the_next_append() {
    let (dir, store) = board();
    add(&store, "kept");
    killed(store);
    let d = dir.path();
    let end = records_end(d);
    // A crash of the machine during an append can leave its later pages written and an
    // earlier one not: zeros, then the rest of a record (here a whole one, numbered as the
    // next change will be).
    let ghost = journal::line(&journal::Record {
        seq: 2,
        at: 1,
        gone: vec![1],
        ..journal::Record::default()
    })
    .unwrap();
    {
        use std::os::unix::fs::FileExt;
        let f = fs::OpenOptions::new()
            .write(true)
            .open(d.join(JOURNAL))
            .unwrap();
        f.write_all_at(&ghost, end + 100).unwrap();
    }
    // Readers stop at the first zero byte: the ghost is not a change.
    assert_eq!(seen_fresh(d), vec![("kept".into(), "Pending".into())]);
    // A reader first, then a change from the same handle: its first look under the lock
    // clears the room, so no later record can end where the ghost starts.
    let writer = open(d);
    assert_eq!(writer.queue().unwrap().len(), 1);
    add(&writer, "next");
    let bytes = fs::read(d.join(JOURNAL)).unwrap();
    let now_end = records_end(d) as usize;
    assert!(
        bytes[now_end..].iter().all(|&b| b == 0),
        "nothing but zeros after the records"
    );
    assert_eq!(records(d), 2);
    assert_eq!(
        seen_fresh(d),
        vec![
            ("kept".into(), "Pending".into()),
            ("next".into(), "Pending".into())
        ]
    );
    killed(writer);
}

#[test]
fn a_crash_between_a_checkpoints_files_and_its_new_journal_applies_nothing_twice() {
    let (dir, store) = board();
    let a = add(&store, "a");
    send(&store, "one");
    assert_eq!(claim(&store, "w1"), Some(a));
    send(&store, "two");
    // The checkpoint's files are written; the process dies before the new journal.
    {
        let _lock = store.lock().unwrap();
        let mut live = store.live();
        let b = live
            .refresh(dir.path(), true, &mut Damages::refuse())
            .unwrap();
        checkpoint::write_files(dir.path(), b, true).unwrap();
    }
    killed(store);
    assert_eq!(queue_file(dir.path())[0].claimed_by.as_deref(), Some("w1"));
    assert_eq!(records(dir.path()), 4, "the old journal is still there");
    // The old journal applied over the new files: the same board, each entry once.
    assert_eq!(
        seen_fresh(dir.path()),
        vec![("a".into(), "InProgress".into())]
    );
    let next = open(dir.path());
    send(&next, "three");
    let _ = claim(&next, "w2");
    drop(next);
    assert_eq!(records(dir.path()), 0);
    assert_eq!(log_seqs(dir.path()), vec![1, 2, 3]);
    let q = queue_file(dir.path());
    assert_eq!((q.len(), q[0].attempts), (1, 1), "{q:?}");
}

#[test]
fn log_entries_a_crashed_writer_did_not_append_are_appended_once() {
    let (dir, store) = board();
    send(&store, "one");
    let log_path = dir.path().join(LOG);
    let with_one = fs::read(&log_path).unwrap();
    send(&store, "two");
    killed(store);
    // The writer died after its record and before the log line.
    fs::write(&log_path, &with_one).unwrap();
    let next = open(dir.path());
    add(&next, "a change");
    assert_eq!(log_seqs(dir.path()), vec![1, 2]);
    send(&next, "three");
    drop(next);
    let next = open(dir.path());
    add(&next, "another");
    drop(next);
    assert_eq!(log_seqs(dir.path()), vec![1, 2, 3]);
    let texts: Vec<String> =
        jsonl::read_all::<crate::message::Message>(&log_path, &mut Damages::refuse())
            .unwrap()
            .into_iter()
            .map(|m| m.message)
            .collect();
    assert_eq!(texts, ["one", "two", "three"]);
}

#[test]
fn a_damaged_record_refuses_changes_reads_show_what_came_before_and_repair_keeps_it() {
    let (dir, store) = board();
    add(&store, "first");
    add(&store, "second");
    add(&store, "third");
    killed(store);
    let jpath = dir.path().join(JOURNAL);
    let text = fs::read_to_string(&jpath).unwrap();
    let damaged = text.replacen("\"second\"", "\"sec0nd\"", 1);
    assert_ne!(damaged, text);
    fs::write(&jpath, &damaged).unwrap();

    let next = open(dir.path());
    let task = NewTask {
        description: "refused".into(),
        ..NewTask::default()
    };
    match next.execute(Op::Add(op::Add { task })) {
        Err(Error::Damaged { path, detail }) => {
            assert!(path.ends_with(JOURNAL), "{path:?}");
            assert!(detail.contains("followed by good records"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    match next.execute(Op::Tasks(op::Tasks {
        status: None,
        all: false,
    })) {
        Err(Error::DamagedRead { reply, damage }) => {
            assert_eq!(damage[0].file, JOURNAL);
            let Reply::Tasks { tasks } = *reply else {
                panic!("{reply:?}")
            };
            let d: Vec<_> = tasks.iter().map(|t| t.task.description.as_str()).collect();
            assert_eq!(d, ["first"]);
        }
        other => panic!("{other:?}"),
    }
    match next.execute(Op::Repair(op::Repair)) {
        Ok(Reply::Repaired { files }) => {
            let j = files
                .iter()
                .find(|f| f.file == JOURNAL)
                .expect("journal repaired");
            assert_eq!(j.kept, 1);
            assert_eq!(
                fs::read_to_string(dir.path().join(&j.backup)).unwrap(),
                damaged
            );
        }
        other => panic!("{other:?}"),
    }
    add(&next, "after repair");
    drop(next);
    assert_eq!(
        seen_fresh(dir.path()),
        vec![
            ("first".into(), "Pending".into()),
            ("after repair".into(), "Pending".into())
        ]
    );
}

#[test]
fn compact_archives_and_writes_the_checkpoint() {
    let (dir, store) = board();
    let a = add(&store, "a");
    add(&store, "b");
    assert_eq!(claim(&store, "w1"), Some(a));
    let done = Op::Complete(op::Complete {
        task: a,
        worker: "w1".into(),
        attempt: None,
        result: Some("done".into()),
    });
    store.execute(done).unwrap();
    match store.execute(Op::Compact(op::Compact)) {
        Ok(Reply::Compacted { archived, .. }) => assert_eq!(archived, 1),
        other => panic!("{other:?}"),
    }
    assert_eq!(records(dir.path()), 0);
    let q = queue_file(dir.path());
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].description, "b");
    let archived = fs::read_to_string(dir.path().join(ARCHIVE)).unwrap();
    assert_eq!(archived.lines().count(), 1);
    killed(store);
}

#[test]
fn a_checkpoint_leaves_the_boards_stamp_as_it_is_and_a_change_moves_it() {
    use crate::store::stamp;
    let (dir, store) = board();
    let d = dir.path();
    add(&store, "a");
    add(&store, "b");
    send(&store, "hello");
    let before = stamp::look(d);
    let journal_before = journal::file_id(&d.join(JOURNAL)).unwrap();
    match store.execute(Op::Compact(op::Compact)) {
        Ok(Reply::Compacted { archived, .. }) => assert_eq!(archived, 0),
        other => panic!("{other:?}"),
    }
    assert_eq!(records(d), 0, "the checkpoint started the journal again");
    assert_ne!(journal::file_id(&d.join(JOURNAL)).unwrap(), journal_before);
    assert_eq!(stamp::look(d), before, "a checkpoint is not a change");
    // Each kind of change moves it: a record, a log entry, a file a person rewrote.
    add(&store, "c");
    let after_add = stamp::look(d);
    assert_ne!(after_add, before);
    store.execute(Op::Compact(op::Compact)).unwrap();
    assert_eq!(stamp::look(d), after_add);
    send(&store, "again");
    let after_send = stamp::look(d);
    assert_ne!(after_send, after_add);
    let queue = fs::read(d.join(QUEUE)).unwrap();
    crate::store::durable::replace(d, QUEUE, &queue, true).unwrap();
    assert_ne!(
        stamp::look(d),
        after_send,
        "a queue file written beside the board"
    );
    killed(store);
}

#[test]
fn the_last_change_is_read_from_the_journals_end_past_a_torn_tail() {
    let (dir, store) = board();
    let d = dir.path();
    add(&store, "first");
    assert_eq!(
        journal::last_change(&d.join(JOURNAL)).unwrap().unwrap().1,
        1
    );
    store.execute(Op::Compact(op::Compact)).unwrap();
    let (header, last) = journal::last_change(&d.join(JOURNAL)).unwrap().unwrap();
    assert_eq!(
        (header.base, last),
        (1, 1),
        "a journal with its header alone"
    );
    for i in 0..40 {
        // Records larger than the first look at the journal's end.
        add(&store, &"x".repeat(1000 + i));
    }
    let (_, last) = journal::last_change(&d.join(JOURNAL)).unwrap().unwrap();
    assert_eq!(last, 41);
    // A last record longer than the first look (16 KiB): the look widens.
    let big = journal::Record {
        seq: 42,
        gone: (1_000_000..1_010_000).collect(),
        ..journal::Record::default()
    };
    let line = journal::line(&big).unwrap();
    assert!(line.len() > 40 << 10);
    write_at_end(d, &line);
    let (_, last) = journal::last_change(&d.join(JOURNAL)).unwrap().unwrap();
    assert_eq!(last, 42);
    write_at_end(d, b"0000abcd {\"seq\":43,");
    assert_eq!(
        journal::last_change(&d.join(JOURNAL)).unwrap().unwrap().1,
        42
    );
    assert!(journal::last_change(&d.join("nothing")).unwrap().is_none());
    killed(store);
}

#[test]
fn log_entries_of_records_a_read_took_first_are_appended_at_the_next_change() {
    let (dir, store) = board();
    let log_path = dir.path().join(LOG);
    // Another handle that has made a change: its reads bring its change board up to date.
    let other = open(dir.path());
    add(&other, "loaded");
    send(&store, "one");
    let with_one = fs::read(&log_path).unwrap();
    send(&store, "two");
    killed(store);
    // The writer died after its record and before the log line.
    fs::write(&log_path, &with_one).unwrap();
    // A read takes the record (without the lock: it appends nothing) ...
    let seen = other.read(Op::Status(op::Status)).unwrap();
    assert!(matches!(seen, Reply::Status { .. }), "{seen:?}");
    assert_eq!(log_seqs(dir.path()), vec![1]);
    // ... and the next change, under the lock, appends the log line the record holds.
    add(&other, "a change");
    assert_eq!(log_seqs(dir.path()), vec![1, 2]);
    add(&other, "another");
    assert_eq!(log_seqs(dir.path()), vec![1, 2]);
    killed(other);
}

#[test]
fn a_read_after_this_handles_change_reads_nothing_and_a_change_after_a_read_appends() {
    let (dir, store) = board();
    add(&store, "a");
    let journal_len = || records_end(dir.path());
    let before = journal_len();
    // Reads between changes use the board the changes use (opened for appending).
    for _ in 0..3 {
        assert_eq!(store.queue().unwrap().len(), 1);
    }
    add(&store, "b");
    assert!(journal_len() > before);
    // Another handle's change is seen by the next read, and this handle's next change
    // follows it.
    let other = open(dir.path());
    add(&other, "c");
    assert_eq!(store.queue().unwrap().len(), 3);
    add(&store, "d");
    assert_eq!(seen_fresh(dir.path()).len(), 4);
    killed(other);
    killed(store);
}

#[test]
fn a_move_to_the_archive_checks_its_tail_again_when_another_process_wrote_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let settings = crate::settings::Settings {
        archive_after: 2,
        ..crate::settings::Settings::default()
    };
    let store = LocalStore::init(dir.path(), Some(settings)).unwrap();
    store.checkpointer.set_quiet(false);
    let finish = |store: &LocalStore, n: usize| {
        for i in 0..n {
            add(store, &format!("t{i}"));
            let id = claim(store, "w1").unwrap();
            let done = Op::Complete(op::Complete {
                task: id,
                worker: "w1".into(),
                attempt: None,
                result: None,
            });
            store.execute(done).unwrap();
        }
    };
    let archived_ids = || -> Vec<u64> {
        jsonl::read_all::<crate::store::archive::ArchiveLine>(
            &dir.path().join(ARCHIVE),
            &mut Damages::refuse(),
        )
        .unwrap()
        .into_iter()
        .map(|l| l.task.id)
        .collect()
    };
    // A move of this handle's own: three finished, more than two, all move.
    finish(&store, 3);
    assert_eq!(archived_ids().len(), 3);
    // Two more finished stay on the queue; a compaction elsewhere appended them to the
    // archive and died before the queue said they were gone.
    finish(&store, 2);
    let finished: Vec<Task> = store
        .queue()
        .unwrap()
        .into_iter()
        .filter(|t| t.status == crate::task::TaskStatus::Completed)
        .collect();
    assert_eq!(finished.len(), 2);
    crate::store::archive::append(&dir.path().join(ARCHIVE), &finished, crate::time::now())
        .unwrap();
    // The next move finds them at the tail and does not write them twice.
    finish(&store, 1);
    let ids = archived_ids();
    let unique: std::collections::BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(ids.len(), 6, "{ids:?}");
    assert_eq!(unique.len(), 6, "{ids:?}");
    killed(store);
}
