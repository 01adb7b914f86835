//! Directory listings in the formats FTP clients parse: `LIST` as `ls -l`
//! prints it, `NLST` as bare names, `MLSD`/`MLST` as RFC 3659 facts; and
//! the `YYYYMMDDHHMMSS` times of `MDTM` and `modify=`.
//!
//! ```text
//!   LIST  -rw-r--r--   1 ftp      ftp          1234 Mar 05 14:07 notes.txt
//!         drwxr-xr-x   2 ftp      ftp             0 Dec 24  2023 old
//!   NLST  notes.txt
//!   MLSD  type=file;size=1234;modify=20240305140711;perm=adfrw;unique=803x1c2; notes.txt
//! ```
//!
//! `ls -l` shows the time of day for files changed within the last six
//! months and the year otherwise, in UTC here (vsftpd's default). Owner
//! and group are always `ftp`: a jailed user's uid means nothing to the
//! client (vsftpd's `hide_ids`).
//!
//! A listing is built on a worker, a page of entries at a time
//! ([`Cursor::page`]), so a directory of 100,000 entries is never one
//! buffer: the data connection carries a page, and the next page is read
//! when it has been sent.

use std::time::{SystemTime, UNIX_EPOCH};

use cap_std::fs::{Dir, Metadata, MetadataExt};

use crate::handlers::files::Refusal;
use crate::handlers::listing::{Listed, read_names};

/// Bytes of listing built per page (one job): about 1,000 `ls -l` lines.
pub const PAGE_BYTES: usize = 64 << 10;
/// Most names a listing holds: what it costs is counted, and bounded.
pub const MAX_ENTRIES: usize = 200_000;

/// Which format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `ls -l`.
    Long,
    /// Names only.
    Names,
    /// RFC 3659 facts.
    Facts,
}

/// A listing under way: the directory and its names, and how far it got.
pub struct Cursor {
    /// The listed directory (None when a file was listed: it is the one
    /// entry).
    dir: Option<Dir>,
    /// The names to list, sorted.
    names: Vec<String>,
    /// The next name to list.
    next: usize,
    /// The format.
    format: Format,
    /// Names were left out past [`MAX_ENTRIES`].
    pub truncated: bool,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Cursor({}/{})", self.next, self.names.len())
    }
}

impl Cursor {
    /// Opens a listing of `target` (virtual) in `home`: reads its names,
    /// or lists the file itself. For a worker.
    pub fn open(home: &Dir, target: &str, format: Format) -> Result<(Cursor, Vec<u8>), Refusal> {
        let mut cursor = match read_names(home, target)? {
            Listed::File(meta) => {
                let mut out = Vec::new();
                let name = crate::jail::file_name(target).unwrap_or("");
                // NLST of a file names it as it was asked (RFC 959: a
                // pathname); the others name the file.
                let shown = if format == Format::Names {
                    target
                } else {
                    name
                };
                entry(&mut out, shown, &meta, format, SystemTime::now());
                let cursor = Cursor {
                    dir: None,
                    names: Vec::new(),
                    next: 0,
                    format,
                    truncated: false,
                };
                return Ok((cursor, out));
            }
            Listed::Dir(dir, mut names) => {
                let truncated = names.len() > MAX_ENTRIES;
                names.truncate(MAX_ENTRIES);
                names.shrink_to_fit();
                Cursor {
                    dir: Some(dir),
                    names,
                    next: 0,
                    format,
                    truncated,
                }
            }
        };
        let page = cursor.page();
        Ok((cursor, page))
    }

    /// Whether names remain to list.
    pub fn more(&self) -> bool {
        self.next < self.names.len()
    }

    /// Memory the names hold.
    pub fn held_bytes(&self) -> usize {
        self.names.capacity() * std::mem::size_of::<String>()
            + self.names.iter().map(String::capacity).sum::<usize>()
    }

    /// The next page (about [`PAGE_BYTES`]). For a worker: it `stat`s.
    pub fn page(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PAGE_BYTES.min(self.names.len().saturating_mul(80)));
        let now = SystemTime::now();
        let Some(dir) = &self.dir else {
            return out;
        };
        while let Some(name) = self.names.get(self.next) {
            if out.len() >= PAGE_BYTES {
                break;
            }
            self.next += 1;
            // A name deleted since the directory was read is left out; a
            // name that cannot go on one line cannot be listed.
            if name.contains(['\r', '\n']) {
                continue;
            }
            if self.format == Format::Names {
                out.extend_from_slice(name.as_bytes());
                out.extend_from_slice(b"\r\n");
                continue;
            }
            if let Ok(meta) = dir.symlink_metadata(name) {
                entry(&mut out, name, &meta, self.format, now);
            }
        }
        out
    }
}

/// Appends one entry of `format`.
pub fn entry(out: &mut Vec<u8>, name: &str, meta: &Metadata, format: Format, now: SystemTime) {
    if !meta.is_dir() && !meta.is_file() {
        return; // symlinks and special files are not the user's files
    }
    let line = match format {
        Format::Names => name.to_string(),
        Format::Long => long(name, meta, now),
        Format::Facts => format!("{} {name}", facts(meta)),
    };
    out.extend_from_slice(line.as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// One `ls -l` line.
fn long(name: &str, meta: &Metadata, now: SystemTime) -> String {
    let mode = meta.mode();
    let mut perms = String::with_capacity(10);
    perms.push(if meta.is_dir() { 'd' } else { '-' });
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        perms.push(if bits & 4 != 0 { 'r' } else { '-' });
        perms.push(if bits & 2 != 0 { 'w' } else { '-' });
        perms.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    let size = if meta.is_dir() { 0 } else { meta.len() };
    let mtime = seconds(meta);
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
    format!(
        "{perms} {:>3} ftp      ftp      {size:>12} {} {name}",
        meta.nlink().min(999),
        ls_time(mtime, now)
    )
}

/// RFC 3659 facts, ending with `;`.
pub fn facts(meta: &Metadata) -> String {
    let unique = format!("unique={:x}x{:x};", meta.dev(), meta.ino());
    let modify = time_val(seconds(meta));
    if meta.is_dir() {
        format!("type=dir;modify={modify};perm=flcdmpe;{unique}")
    } else {
        format!(
            "type=file;size={};modify={modify};perm=adfrw;{unique}",
            meta.len()
        )
    }
}

/// The modification time in whole seconds since the epoch (0 if unknown).
pub fn seconds(meta: &Metadata) -> i64 {
    meta.mtime()
}

/// `ls -l`'s time column: `Mon dd HH:MM` within six months before (or an
/// hour after) `now`, else `Mon dd  YYYY`.
pub fn ls_time(mtime: i64, now: i64) -> String {
    const HALF_YEAR: i64 = 182 * 24 * 3600;
    let (y, mo, d, h, mi, _) = civil(mtime);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let month = MONTHS[usize::from(mo - 1)];
    let recent = mtime > now.saturating_sub(HALF_YEAR) && mtime <= now.saturating_add(3600);
    if recent {
        format!("{month} {d:02} {h:02}:{mi:02}")
    } else {
        format!("{month} {d:02} {y:>5}")
    }
}

/// RFC 3659's `time-val` (UTC): `YYYYMMDDHHMMSS`.
pub fn time_val(secs: i64) -> String {
    let (y, mo, d, h, mi, s) = civil(secs);
    format!("{y:04}{mo:02}{d:02}{h:02}{mi:02}{s:02}")
}

/// UTC calendar date and time of a Unix time, clamped to years 0..=9999
/// (so every format above stays its width). Days to civil date after
/// Howard Hinnant's `civil_from_days`.
fn civil(secs: i64) -> (i64, u8, u8, u8, u8, u8) {
    // 0000-01-01 and 9999-12-31T23:59:59 in Unix time.
    let secs = secs.clamp(-62_167_219_200, 253_402_300_799);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    // All below are in range by construction (clamped input).
    let small = |v: i64| u8::try_from(v).unwrap_or(0);
    (
        y,
        small(m),
        small(d),
        small(rem / 3600),
        small(rem % 3600 / 60),
        small(rem % 60),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates_at_known_points() {
        assert_eq!(time_val(0), "19700101000000");
        assert_eq!(time_val(951_782_400), "20000229000000");
        assert_eq!(time_val(1_709_647_631), "20240305140711");
        assert_eq!(time_val(-1), "19691231235959");
        assert_eq!(time_val(i64::MAX), "99991231235959");
        assert_eq!(time_val(i64::MIN), "00000101000000");
    }

    #[test]
    fn ls_shows_the_time_for_recent_files_and_the_year_for_old_ones() {
        let now = 1_709_647_631; // 2024-03-05 14:07:11
        assert_eq!(ls_time(now - 60, now), "Mar 05 14:06");
        assert_eq!(ls_time(now - 200 * 86_400, now), "Aug 18  2023");
        assert_eq!(ls_time(now + 86_400, now), "Mar 06  2024");
    }

    #[test]
    fn a_long_line_has_the_columns_clients_split_on() {
        let dir = std::env::temp_dir().join(format!("skiff-ftp-ls-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a b.txt"), b"12345").unwrap();
        let home = Dir::open_ambient_dir(&dir, cap_std::ambient_authority()).unwrap();
        let (cursor, page) = Cursor::open(&home, "/", Format::Long).unwrap();
        assert!(!cursor.more());
        let text = String::from_utf8(page).unwrap();
        let lines: Vec<&str> = text.split_terminator("\r\n").collect();
        assert_eq!(lines.len(), 2, "{text}");
        let cols: Vec<&str> = lines[0].split_whitespace().collect();
        assert!(cols[0].starts_with("-rw"), "{}", lines[0]);
        assert_eq!(&cols[2..5], ["ftp", "ftp", "5"]);
        assert!(lines[0].ends_with(" a b.txt"));
        assert!(lines[1].starts_with('d') && lines[1].ends_with(" sub"));
        let (_, page) = Cursor::open(&home, "/a b.txt", Format::Facts).unwrap();
        let text = String::from_utf8(page).unwrap();
        assert!(text.starts_with("type=file;size=5;modify="), "{text}");
        assert!(text.ends_with("; a b.txt\r\n"));
        let (_, page) = Cursor::open(&home, "/a b.txt", Format::Names).unwrap();
        assert_eq!(page, b"/a b.txt\r\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
