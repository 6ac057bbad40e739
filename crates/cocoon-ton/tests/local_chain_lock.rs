//! The state directory of a [`LocalChain`] has one owner at a time: opening it
//! takes an exclusive lock that a second opener (in this process or another)
//! cannot get, and dropping the chain releases it.

use std::process::Command;

use cocoon_ton::local::{GenesisConfig, LocalChain, LocalChainError};

fn assert_in_use(r: Result<LocalChain, LocalChainError>, pid: u32) {
    match r {
        Err(LocalChainError::InUse { pid: Some(p), path }) => {
            assert_eq!(p, pid);
            assert!(path.ends_with("lock"), "{}", path.display());
        }
        Err(e) => panic!("expected InUse, got {e}"),
        Ok(_) => panic!("opened a directory that is in use"),
    }
}

#[test]
fn a_second_opener_is_refused_until_the_first_drops_the_chain() {
    let dir = tempfile::tempdir().unwrap();
    let me = std::process::id();
    let first = LocalChain::genesis_in(dir.path(), GenesisConfig::default()).unwrap();
    // Every way of opening the directory is refused while `first` lives.
    assert_in_use(LocalChain::open(dir.path()), me);
    assert_in_use(
        LocalChain::open_or_genesis(dir.path(), GenesisConfig::default()),
        me,
    );
    assert_in_use(
        LocalChain::genesis_in(dir.path(), GenesisConfig::default()),
        me,
    );
    let other = LocalChain::genesis(GenesisConfig::default()).unwrap();
    assert!(matches!(
        other.persist_to(dir.path()),
        Err(LocalChainError::InUse { .. })
    ));
    let msg = LocalChain::open(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains(&format!("already open in this process (pid {me})")),
        "{msg}"
    );
    // The holder keeps working (and persisting) meanwhile.
    first
        .fund(&cocoon_ton::StdAddr::default(), 1_000_000_000)
        .unwrap();
    // A chain persisting to its own directory again is not refused.
    first.persist_to(dir.path()).unwrap();
    drop(first);

    let second = LocalChain::open(dir.path()).unwrap();
    assert_eq!(
        second.balance(&cocoon_ton::StdAddr::default()).unwrap(),
        1_000_000_000
    );
    drop(second);
    LocalChain::open_or_genesis(dir.path(), GenesisConfig::default()).unwrap();
}

/// Not a test: the other process of the next test (run by it, with
/// `COCOON_HOLD_CHAIN_DIR` set). Opens the chain, says so, and holds it until
/// its stdin closes or it is killed.
#[test]
#[ignore = "helper process of another test"]
fn hold_the_chain_open() {
    use std::io::Read;
    let Some(dir) = std::env::var_os("COCOON_HOLD_CHAIN_DIR") else {
        return;
    };
    let _chain = LocalChain::open(&dir).unwrap();
    println!("HOLDING");
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
}

/// Another process holding the directory is named by its pid; when it dies
/// (killed, without cleaning up) the directory is free again.
#[test]
fn another_process_is_named_and_its_death_frees_the_directory() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let dir = tempfile::tempdir().unwrap();
    drop(LocalChain::genesis_in(dir.path(), GenesisConfig::default()).unwrap());
    let mut holder = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "hold_the_chain_open", "--ignored", "--nocapture"])
        .env("COCOON_HOLD_CHAIN_DIR", dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(holder.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("HOLDING") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the holder exited");
    }
    let err = LocalChain::open(dir.path()).unwrap_err();
    assert!(
        matches!(err, LocalChainError::InUse { pid: Some(p), .. } if p == holder.id()),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains(&format!("in use by another process (pid {})", holder.id())),
        "{err}"
    );
    holder.kill().unwrap();
    holder.wait().unwrap();
    // The lock file (with the dead holder's pid) is still there; it does not matter.
    assert!(dir.path().join("lock").exists());
    LocalChain::open(dir.path()).unwrap();
}

/// With the lock released, a transaction log shorter than the snapshot is
/// still reported as damage (not silently dropped).
#[test]
fn a_damaged_directory_is_reported_after_the_holder_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let chain = LocalChain::genesis_in(dir.path(), GenesisConfig::default()).unwrap();
    chain
        .fund(&cocoon_ton::StdAddr::default(), 1_000_000_000)
        .unwrap();
    drop(chain);
    std::fs::write(dir.path().join("transactions.log"), "").unwrap();
    match LocalChain::open(dir.path()) {
        Err(LocalChainError::Persist { reason, .. }) => {
            assert!(reason.contains("the snapshot counts 1"), "{reason}")
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("opened a damaged directory"),
    }
}
