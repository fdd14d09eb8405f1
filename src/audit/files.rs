//! The files of an audit directory and how the small ones are replaced: the
//! segments are only ever appended to (by the writer), while `audit.head`,
//! `audit.pub` and the signing key are written whole, to a temp file that is
//! fsynced and renamed over the old one, so a crash leaves the old file or
//! the new one, never half of either.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    path::Path,
};

use super::{
    chain::Checkpoint,
    line::{self, Line},
    signer, AuditError,
};

/// The single append-only file of earlier versions, migrated to segments
/// on first open ([`super::segments`]).
pub const LOG_FILE: &str = "audit.log";
/// The latest signed checkpoint, so that cutting lines off the end of the log
/// (checkpoints included) is detected.
pub const HEAD_FILE: &str = "audit.head";
/// The public key checkpoints verify with, as SPKI PEM.
pub const PUB_FILE: &str = "audit.pub";

/// Replaces `path` with `contents` via a fsynced temp file and a rename. A
/// `private` file is created with mode 0600 from the start, so the key is
/// never readable by others, not even briefly. The caller syncs the folder
/// ([`sync_parent`]) when the rename itself must survive a crash.
pub(crate) fn replace_file(path: &Path, contents: &[u8], private: bool) -> io::Result<()> {
    let mut name = path.file_name().unwrap_or_default().to_owned();
    name.push(".tmp");
    let tmp = path.with_file_name(name);
    // A temp file left by a crash may have other permissions; start afresh.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut file = options.open(&tmp)?;
    file.write_all(contents)?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)
}

/// Makes a rename or creation in `path`'s folder durable.
pub(crate) fn sync_parent(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        File::open(parent)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        // Windows cannot open a folder for syncing; NTFS journals renames.
        let _ = path;
        Ok(())
    }
}

/// Reads `audit.head`, if there is one. Its signature is checked with the
/// log ([`super::verify::check_head`]); it is read *before* the log, because
/// the head only ever names a checkpoint already in the log, so a head read
/// first is covered by a log read after it even while the log is written.
pub(crate) fn read_head(dir: &Path) -> Result<Option<Checkpoint>, String> {
    let bytes = match fs::read(dir.join(HEAD_FILE)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {HEAD_FILE}: {e}")),
    };
    match line::parse(bytes.trim_ascii_end()) {
        Ok(Line::Checkpoint(cp)) => Ok(Some(cp)),
        Ok(Line::Record { .. }) => Err(format!("{HEAD_FILE} holds a record, not a checkpoint")),
        Err(e) => Err(format!("{HEAD_FILE} is malformed: {e}")),
    }
}

/// Replaces `audit.head` with `cp`. Errors before the rename leave the old
/// head in place; the folder sync after it is the caller's ([`sync_parent`]).
pub(crate) fn write_head(dir: &Path, cp: &Checkpoint) -> io::Result<()> {
    let mut buf = Vec::with_capacity(256);
    line::write_checkpoint(&mut buf, cp)?;
    replace_file(&dir.join(HEAD_FILE), &buf, false)
}

/// Writes `audit.pub` for `signer` in `dir` (created if missing) on first
/// open, and refuses a folder whose `audit.pub` is another key's.
pub(crate) fn ensure_public_key(dir: &Path, signer: &super::Signer) -> Result<(), AuditError> {
    fs::create_dir_all(dir).map_err(|source| AuditError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join(PUB_FILE);
    match read_public_key(dir)? {
        Some(stored) if stored != signer.public_key() => Err(AuditError::KeyMismatch { path }),
        Some(_) => Ok(()),
        None => replace_file(&path, signer.public_key_pem().as_bytes(), false)
            .and_then(|()| sync_parent(&path))
            .map_err(|source| AuditError::Io { path, source }),
    }
}

/// Reads the public key stored beside the log, if there is one.
pub(crate) fn read_public_key(dir: &Path) -> Result<Option<[u8; 32]>, AuditError> {
    let path = dir.join(PUB_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => signer::parse_public_key_pem(&text)
            .map(Some)
            .map_err(|e| AuditError::Pem(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AuditError::Io { path, source }),
    }
}

/// Latencies of `samples` fsyncs on the disk holding `path`, sorted: each
/// after appending a record-sized line, with the same call the writer uses
/// (`fdatasync`). The file is removed afterwards. A durable access log
/// cannot answer faster than one of these; benchmarks print it for scale.
pub fn fsync_latencies(path: &Path, samples: usize) -> io::Result<Vec<std::time::Duration>> {
    let mut file = OpenOptions::new().create(true).append(true).open(path)?;
    let line = [b'x'; 300];
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        file.write_all(&line)?;
        let t = std::time::Instant::now();
        file.sync_data()?;
        out.push(t.elapsed());
    }
    drop(file);
    fs::remove_file(path)?;
    out.sort();
    Ok(out)
}
