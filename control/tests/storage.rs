//! Raft storage on disk: reopen, overwrite, torn and corrupt tails, compaction.

use std::fs::OpenOptions;
use std::io::Write;

use raft::eraftpb::{ConfState, Entry, HardState};
use raft::{GetEntriesContext, Storage};
use sluice_control::storage::ApplyState;
use sluice_control::DiskStorage;

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn terms(s: &DiskStorage) -> Result<Vec<(u64, u64)>, raft::Error> {
    let (first, last) = (s.first_index()?, s.last_index()?);
    let ents = s.entries(first, last + 1, None, GetEntriesContext::empty(false))?;
    Ok(ents.iter().map(|e| (e.index, e.term)).collect())
}

#[test]
fn reopens_entries_hard_state_and_overwrites() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut s = DiskStorage::open(dir.path())?;
        s.append(&[entry(1, 1), entry(2, 1), entry(3, 1)])?;
        s.set_hard_state(&HardState {
            term: 2,
            vote: 3,
            commit: 1,
            ..Default::default()
        })?;
        // A new leader overwrites index 2 onwards.
        s.append(&[entry(2, 2)])?;
        s.sync()?;
    }
    let s = DiskStorage::open(dir.path())?;
    assert_eq!(terms(&s)?, vec![(1, 1), (2, 2)]);
    assert_eq!(
        (
            s.hard_state().term,
            s.hard_state().vote,
            s.hard_state().commit
        ),
        (2, 3, 1)
    );
    Ok(())
}

#[test]
fn torn_and_corrupt_tails_are_cut() -> TestResult {
    let dir = tempfile::tempdir()?;
    {
        let mut s = DiskStorage::open(dir.path())?;
        s.append(&[entry(1, 1), entry(2, 1)])?;
        s.sync()?;
    }
    let path = dir.path().join("raft.log");
    let good_len = std::fs::metadata(&path)?.len();
    // A torn frame: a header promising more than is there.
    OpenOptions::new()
        .append(true)
        .open(&path)?
        .write_all(&[200, 0, 0, 0, 1, 2, 3])?;
    {
        let mut s = DiskStorage::open(dir.path())?;
        assert_eq!(terms(&s)?, vec![(1, 1), (2, 1)]);
        assert_eq!(std::fs::metadata(&path)?.len(), good_len, "tail cut");
        s.append(&[entry(3, 1)])?;
        s.sync()?;
    }
    // Flip a byte inside the last frame: it and everything after it are dropped.
    let mut bytes = std::fs::read(&path)?;
    let last = bytes.len() - 2;
    bytes[last] ^= 0xff;
    std::fs::write(&path, &bytes)?;
    let s = DiskStorage::open(dir.path())?;
    assert_eq!(terms(&s)?, vec![(1, 1), (2, 1)]);
    Ok(())
}

#[test]
fn garbage_files_give_errors_or_empty_logs_never_panics() -> TestResult {
    let mut seed = 0x1234_5678_u64;
    for round in 0..64 {
        let dir = tempfile::tempdir()?;
        let len = (round * 37) % 500;
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        std::fs::write(dir.path().join("raft.log"), &bytes)?;
        if round % 2 == 0 {
            std::fs::write(dir.path().join("snapshot"), &bytes)?;
        }
        let _ = DiskStorage::open(dir.path());
    }
    Ok(())
}

#[test]
fn compaction_keeps_later_entries_and_survives_reopen() -> TestResult {
    let dir = tempfile::tempdir()?;
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    {
        let mut s = DiskStorage::open(dir.path())?;
        s.append(&(1..=10).map(|i| entry(i, 1 + i / 5)).collect::<Vec<_>>())?;
        s.set_hard_state(&HardState {
            term: 3,
            vote: 1,
            commit: 8,
            ..Default::default()
        })?;
        s.set_apply_state(ApplyState {
            applied: 6,
            conf_state: cs.clone(),
        })?;
        s.sync()?;
        s.compact(6, cs.clone(), b"image at 6".to_vec())?;
        assert_eq!(s.first_index()?, 7);
        assert!(s
            .entries(5, 7, None, GetEntriesContext::empty(false))
            .is_err());
        assert_eq!(s.term(6)?, 2);
    }
    let s = DiskStorage::open(dir.path())?;
    assert_eq!(terms(&s)?, vec![(7, 2), (8, 2), (9, 2), (10, 3)]);
    let snap = s.snapshot(0, 2)?;
    assert_eq!(
        (snap.get_metadata().index, &snap.data[..]),
        (6, &b"image at 6"[..])
    );
    assert_eq!(s.initial_state()?.conf_state, cs);
    assert_eq!(s.hard_state().commit, 8);
    // A snapshot whose configuration lacks the receiver is refused (the receiver would
    // ignore it) and a fresh one is requested.
    assert!(s.snapshot(0, 4).is_err());
    assert!(s.take_snapshot_wanted());
    Ok(())
}
