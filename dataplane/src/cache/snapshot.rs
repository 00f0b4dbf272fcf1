//! The cache on disk: a versioned header, then one record per entry, each
//! with its own CRC32C, then an end record with the count. Written to a
//! temporary file, fsynced, then renamed, so a writer killed mid-way leaves
//! the previous snapshot as the newest complete one.

use super::entry::{Entry, Meta};
use super::Cache;
use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use thiserror::Error;

const MAGIC: &[u8; 8] = b"UGSNAP\0\0";
const VERSION: u32 = 1;
const TAG_ENTRY: u8 = 1;
const TAG_MARKER: u8 = 2;
const TAG_END: u8 = 0xff;
/// Snapshots kept in the directory; older ones are deleted.
const KEEP: usize = 3;
/// Largest record accepted when reading, in bytes.
const MAX_RECORD: u32 = 1 << 30;
/// Ids (sequence numbers) past this are not ones a cache handed out: such
/// a record is skipped as damaged, so restoring cannot run the counter out.
const MAX_ID: u64 = 1 << 62;

/// Why a snapshot could not be written or restored.
#[derive(Debug, Error)]
pub enum SnapshotError {
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The directory holds no snapshot that passes its checks.
    #[error("no usable snapshot in {0}")]
    NoSnapshot(PathBuf),
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What a snapshot wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// The snapshot file.
    pub file: PathBuf,
    /// Responses written.
    pub entries: u64,
    /// Size of the file, in bytes.
    pub bytes: u64,
}

/// What a restore loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// The snapshot file used.
    pub file: PathBuf,
    /// Responses loaded.
    pub restored: u64,
    /// Records skipped because their checksum failed.
    pub skipped: u64,
    /// Newer snapshot files passed over because they failed their checks.
    pub rejected_files: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes the cache to a new snapshot in `dir`.
pub fn write(cache: &Cache, dir: &Path) -> Result<Written, SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let stamp = unix_ms(SystemTime::now());
    let file = dir.join(format!("cache-{stamp:016}.snap"));
    let tmp = dir.join(format!(".cache-{stamp:016}.snap.tmp"));
    let result = (|| {
        let f = File::create(&tmp)?;
        let mut w = BufWriter::new(f);
        let entries = write_to(cache, &mut w, stamp)?;
        let f = w.into_inner().map_err(|e| e.into_error())?;
        f.sync_all()?;
        Ok(entries)
    })();
    let entries = match result {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            return Err(SnapshotError::Io {
                path: tmp,
                source: e,
            });
        }
    };
    std::fs::rename(&tmp, &file).map_err(io_err(&file))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err(dir))?;
    let bytes = std::fs::metadata(&file).map_err(io_err(&file))?.len();
    for old in snapshots(dir).into_iter().skip(KEEP) {
        let _ = std::fs::remove_file(old);
    }
    Ok(Written {
        file,
        entries,
        bytes,
    })
}

/// Writes the snapshot stream to `w`; returns the number of responses.
pub fn write_to(cache: &Cache, w: &mut impl Write, stamp: u64) -> io::Result<u64> {
    let mut header = BytesMut::new();
    header.put_slice(MAGIC);
    header.put_u32_le(VERSION);
    header.put_u64_le(stamp);
    let crc = crc32c::crc32c(&header);
    header.put_u32_le(crc);
    w.write_all(&header)?;
    let mut rec = BytesMut::new();
    for super::VaryRecord { url, names, id } in cache.vary_markers() {
        rec.clear();
        put_bytes32(&mut rec, &url);
        rec.put_u64_le(id);
        rec.put_u16_le(names.len() as u16);
        for n in names.iter() {
            put_bytes16(&mut rec, n.as_bytes());
        }
        write_record(w, TAG_MARKER, &rec)?;
    }
    let mut count = 0u64;
    for e in cache.entries() {
        rec.clear();
        encode_entry(&mut rec, &e);
        write_record(w, TAG_ENTRY, &rec)?;
        count += 1;
    }
    rec.clear();
    rec.put_u64_le(count);
    write_record(w, TAG_END, &rec)?;
    w.flush()?;
    Ok(count)
}

fn write_record(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&head), payload);
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.write_all(&crc.to_le_bytes())
}

fn put_bytes32(b: &mut BytesMut, v: &[u8]) {
    b.put_u32_le(v.len() as u32);
    b.put_slice(v);
}

fn put_bytes16(b: &mut BytesMut, v: &[u8]) {
    b.put_u16_le(v.len() as u16);
    b.put_slice(v);
}

fn put_opt16(b: &mut BytesMut, v: &Option<Bytes>) {
    match v {
        Some(v) => put_bytes16(b, v),
        None => b.put_u16_le(u16::MAX),
    }
}

fn encode_entry(b: &mut BytesMut, e: &Entry) {
    put_bytes32(b, &e.key);
    put_bytes32(b, &e.head);
    put_bytes32(b, &e.body);
    let m = &e.meta;
    b.put_u16_le(m.status);
    b.put_u64_le(unix_ms(m.stored_wall));
    b.put_u64_le(m.initial_age);
    b.put_u64_le(m.lifetime);
    b.put_u8(u8::from(m.must_revalidate) | u8::from(m.no_cache) << 1 | u8::from(m.auth_ok) << 2);
    b.put_u64_le(m.stale_while_revalidate);
    b.put_u64_le(m.stale_if_error);
    put_opt16(b, &m.etag);
    put_opt16(b, &m.last_modified);
    b.put_u64_le(m.vary_id);
    b.put_u32_le(e.crc);
}

/// A bounds-checked reader over one record's payload.
struct Rec(Bytes);

impl Rec {
    fn take(&mut self, n: usize) -> Option<Bytes> {
        (self.0.len() >= n).then(|| self.0.split_to(n))
    }
    fn u8(&mut self) -> Option<u8> {
        (self.0.remaining() >= 1).then(|| self.0.get_u8())
    }
    fn u16(&mut self) -> Option<u16> {
        (self.0.remaining() >= 2).then(|| self.0.get_u16_le())
    }
    fn u32(&mut self) -> Option<u32> {
        (self.0.remaining() >= 4).then(|| self.0.get_u32_le())
    }
    fn u64(&mut self) -> Option<u64> {
        (self.0.remaining() >= 8).then(|| self.0.get_u64_le())
    }
    fn bytes32(&mut self) -> Option<Bytes> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn bytes16(&mut self) -> Option<Bytes> {
        let n = self.u16()? as usize;
        self.take(n)
    }
    fn opt16(&mut self) -> Option<Option<Bytes>> {
        match self.u16()? {
            u16::MAX => Some(None),
            n => Some(Some(self.take(n as usize)?)),
        }
    }
}

fn decode_entry(payload: Bytes, now: Instant, now_wall: SystemTime) -> Option<Entry> {
    let mut r = Rec(payload);
    let (key, head, body) = (r.bytes32()?, r.bytes32()?, r.bytes32()?);
    let status = r.u16()?;
    let stored_wall = UNIX_EPOCH + Duration::from_millis(r.u64()?);
    let initial_age = r.u64()?;
    let lifetime = r.u64()?;
    let flags = r.u8()?;
    let (swr, sie) = (r.u64()?, r.u64()?);
    let (etag, last_modified) = (r.opt16()?, r.opt16()?);
    let vary_id = r.u64().filter(|&id| id < MAX_ID)?;
    let crc = r.u32()?;
    // Time spent on disk counts towards the age.
    let on_disk = now_wall
        .duration_since(stored_wall)
        .unwrap_or(Duration::ZERO)
        .as_secs();
    let meta = Meta {
        status,
        stored_wall,
        initial_age: initial_age.saturating_add(on_disk),
        lifetime,
        must_revalidate: flags & 1 != 0,
        no_cache: flags & 2 != 0,
        auth_ok: flags & 4 != 0,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        etag,
        last_modified,
        vary_id,
    };
    let e = Entry::new(key, head, body, meta, now);
    (e.crc == crc).then_some(e)
}

/// Snapshot files in `dir`, newest first.
fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("cache-") && n.ends_with(".snap"))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files.reverse();
    files
}

/// Loads the newest snapshot in `dir` that passes its checks into `cache`
/// (which is cleared first), skipping and counting bad records.
pub fn restore(cache: &Cache, dir: &Path) -> Result<Restored, SnapshotError> {
    let mut rejected_files = 0;
    for file in snapshots(dir) {
        let mut data = Vec::new();
        File::open(&file)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(io_err(&file))?;
        match load(cache, Bytes::from(data), Instant::now(), SystemTime::now()) {
            Some((restored, skipped)) => {
                return Ok(Restored {
                    file,
                    restored,
                    skipped,
                    rejected_files,
                });
            }
            None => rejected_files += 1,
        }
    }
    Err(SnapshotError::NoSnapshot(dir.to_path_buf()))
}

/// Reads one snapshot file's bytes into `cache` (cleared first when the
/// file is whole): `(entries restored, records skipped)`, or `None` when
/// the header or framing is broken and nothing was touched. The reader
/// behind [`restore`], public so that it is fuzzed on arbitrary files.
pub fn load(cache: &Cache, data: Bytes, now: Instant, now_wall: SystemTime) -> Option<(u64, u64)> {
    let records = parse(data)?;
    cache.clear();
    let (mut restored, mut skipped) = (0, 0);
    for (tag, payload) in records {
        match (tag, payload) {
            (TAG_MARKER, Some(p)) => match decode_marker(p) {
                Some(record) => cache.restore_marker(record),
                None => skipped += 1,
            },
            (TAG_ENTRY, Some(p)) => match decode_entry(p, now, now_wall) {
                Some(e) => {
                    cache.restore_entry(e);
                    restored += 1;
                }
                None => skipped += 1,
            },
            _ => skipped += 1,
        }
    }
    Some((restored, skipped))
}

fn decode_marker(payload: Bytes) -> Option<super::VaryRecord> {
    let mut r = Rec(payload);
    let url = r.bytes32()?;
    let id = r.u64().filter(|&id| id < MAX_ID)?;
    let n = r.u16()?;
    let names = (0..n)
        .map(|_| {
            r.bytes16()
                .and_then(|b| std::str::from_utf8(&b).ok().map(Into::into))
        })
        .collect::<Option<Vec<Box<str>>>>()?;
    Some(super::VaryRecord {
        url,
        names: names.into(),
        id,
    })
}

/// Splits a snapshot into records. `None` when the header or the framing
/// is broken or the end record is missing (an incomplete file); a record
/// whose checksum fails is returned as `(tag, None)` to be counted.
fn parse(mut data: Bytes) -> Option<Vec<(u8, Option<Bytes>)>> {
    if data.len() < 24 || &data[..8] != MAGIC {
        return None;
    }
    let header = data.split_to(24);
    if (&header[8..12]).get_u32_le() != VERSION
        || crc32c::crc32c(&header[..20]) != (&header[20..24]).get_u32_le()
    {
        return None;
    }
    let mut records = Vec::new();
    loop {
        if data.len() < 5 {
            return None;
        }
        let tag = data[0];
        let len = (&data[1..5]).get_u32_le();
        if len > MAX_RECORD || data.len() < 5 + len as usize + 4 {
            return None;
        }
        let frame = data.split_to(5 + len as usize);
        let crc = data.get_u32_le();
        let ok = crc32c::crc32c(&frame) == crc;
        let payload = frame.slice(5..);
        if tag == TAG_END {
            let count = (ok && payload.len() == 8).then(|| payload.clone().get_u64_le());
            let entries = records.iter().filter(|(t, _)| *t == TAG_ENTRY).count() as u64;
            return (count == Some(entries)).then_some(records);
        }
        records.push((tag, ok.then_some(payload)));
    }
}
