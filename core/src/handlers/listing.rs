//! `ls`: a directory listing, one page at a time.
//!
//! A directory may hold more entries than one 64 KiB header can carry, so
//! a reply holds one page: at most `limit` entries from `offset` on, in
//! name order, and no more than fit in a header. When entries remain, the
//! reply says where the next page starts (`next`); a listing that fits
//! one page has no `next`, so it is exactly the reply of a client that
//! never heard of paging.
//!
//! Each page is built on a worker: the directory is read and sorted by
//! name again (reading names is cheap: no `stat`), and only the entries of
//! the page are `stat`ed. The pages of a directory that changes between
//! two requests may therefore skip or repeat an entry, as `ls` of a
//! changing directory always could.

use cap_std::fs::Dir;
use serde_json::{Number, Value};

use skiff::frame::MAX_HEADER;
use skiff::proto::Code;

use super::files::{Refusal, reply_or, resolve};
use super::{Job, Next, Session, ok};
use crate::jail;
use crate::pool::Lane;
use crate::services::account::Account;

/// Most entries in one page, and the page size when `limit` is not given.
pub const MAX_PAGE: usize = 1000;

/// Header bytes kept free for what surrounds the entries: `op`, `id`,
/// `next` and the brackets (an `id` and a `next` are at most 20 digits each).
const HEADER_FRAME_ROOM: usize = 128;

/// One `ls` entry as the protocol lists it.
#[derive(serde::Serialize)]
struct Entry {
    name: String,
    kind: &'static str,
    size: u64,
    mtime: i64,
}

impl Entry {
    /// The entry for a file or directory; None for symlinks and special
    /// files, which are not the user's files.
    fn of(name: String, m: &cap_std::fs::Metadata) -> Option<Entry> {
        let kind = if m.is_dir() {
            "dir"
        } else if m.is_file() {
            "file"
        } else {
            return None;
        };
        let mtime = m
            .modified()
            .ok()
            .and_then(|t| t.into_std().duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        Some(Entry {
            name,
            kind,
            size: if m.is_dir() { 0 } else { m.len() },
            mtime,
        })
    }
}

/// Which part of a listing a request asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Page {
    /// Index (in name order) of the first entry.
    offset: usize,
    /// Most entries to return.
    limit: usize,
}

impl Page {
    /// The `offset` (default 0) and `limit` (default and cap [`MAX_PAGE`])
    /// of a request.
    fn of(header: &skiff::frame::Header) -> Result<Page, Refusal> {
        let number = |key: &str| match header.fields.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                (
                    Code::BadRequest,
                    format!("{key:?} must be a non-negative integer"),
                )
            }),
        };
        // Past the end of any directory is an empty page, so a huge offset
        // can be clamped rather than refused.
        let offset = number("offset")?.map_or(0, |o| usize::try_from(o).unwrap_or(usize::MAX));
        let limit = match number("limit")? {
            None => MAX_PAGE,
            Some(0) => return Err((Code::BadRequest, "\"limit\" must be at least 1".into())),
            Some(n) => usize::try_from(n).map_or(MAX_PAGE, |n| n.min(MAX_PAGE)),
        };
        Ok(Page { offset, limit })
    }
}

/// `ls` with optional `path`, `offset` and `limit`.
pub fn ls(
    header: &skiff::frame::Header,
    session: &Session,
    account: &Account,
) -> Result<Next, Refusal> {
    let target = resolve(header, session, false)?;
    let page = Page::of(header)?;
    let home = account.home.clone();
    let id = header.id.clone();
    // The whole reply is built on the worker: reading, sorting, `stat`ing
    // and encoding a page of a large directory is milliseconds of work.
    Ok(Next::Job(Job::new(
        "ls",
        Lane::Quick,
        move || reply(&home, &target, page, id.as_ref()),
        |result, id, _session, out, _ctx| {
            if let Some(reply) = reply_or(result, id, out) {
                out.extend_from_slice(&reply);
            }
            Next::Done
        },
    )))
}

/// The whole reply frame for one page of `target`.
fn reply(home: &Dir, target: &str, page: Page, id: Option<&Number>) -> Result<Vec<u8>, Refusal> {
    let (entries, next) = list(home, target, page)?;
    let mut reply = Vec::new();
    ok(&mut reply, id)
        .field("entries", &entries)
        .opt("next", next)
        .try_finish()
        .map_err(|_| {
            // Cannot happen: the page was cut to fit (see `fits`).
            (
                Code::Internal,
                format!("{target}: a page of the listing did not fit in one header"),
            )
        })?;
    Ok(reply)
}

/// One page of the entries of `target` (or the one entry, if it is a
/// file), sorted by name, and the offset of the next page if any remain.
fn list(home: &Dir, target: &str, page: Page) -> Result<(Vec<Entry>, Option<usize>), Refusal> {
    let (dir, names) = match read_names(home, target)? {
        Listed::File(meta) => {
            let name = jail::file_name(target).unwrap_or("").to_string();
            let entry = Entry::of(name, &meta).filter(|_| page.offset == 0);
            return Ok((entry.into_iter().collect(), None));
        }
        Listed::Dir(dir, names) => (dir, names),
    };
    let mut entries = Vec::new();
    let mut bytes = 0;
    let mut index = page.offset;
    while let Some(name) = names.get(index) {
        if entries.len() == page.limit {
            break;
        }
        index += 1;
        // An entry deleted since the directory was read is left out.
        let Ok(m) = dir.symlink_metadata(name) else {
            continue;
        };
        let Some(entry) = Entry::of(name.clone(), &m) else {
            continue;
        };
        let size = encoded_len(&entry);
        if !entries.is_empty() && !fits(bytes + size) {
            index -= 1;
            break;
        }
        bytes += size;
        entries.push(entry);
    }
    let next = (index < names.len()).then_some(index);
    Ok((entries, next))
}

/// What a listed path turned out to be.
pub enum Listed {
    /// A regular file (its metadata): it lists as itself.
    File(cap_std::fs::Metadata),
    /// A directory (open), and the names of its files and subdirectories
    /// in name order; symlinks and special files are left out.
    Dir(Dir, Vec<String>),
}

/// Reads the names in `target` (virtual) of `home`, sorted; reading names
/// is cheap (no `stat`), so each caller `stat`s only the entries it shows.
/// For a worker.
pub fn read_names(home: &Dir, target: &str) -> Result<Listed, Refusal> {
    let rel = jail::relative(target);
    let meta = home
        .metadata(&rel)
        .map_err(|e| jail::io_error(&e, target))?;
    if meta.is_file() {
        return Ok(Listed::File(meta));
    }
    if !meta.is_dir() {
        return Err((Code::Forbidden, format!("{target}: not a regular file")));
    }
    let dir = home
        .open_dir(&rel)
        .map_err(|e| jail::io_error(&e, target))?;
    let mut names = Vec::new();
    for entry in dir.entries().map_err(|e| jail::io_error(&e, target))? {
        let entry = entry.map_err(|e| jail::io_error(&e, target))?;
        // The type comes with the name (d_type), so no `stat` is needed
        // to leave out symlinks and special files.
        let Ok(kind) = entry.file_type() else {
            continue;
        };
        if kind.is_dir() || kind.is_file() {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort_unstable();
    Ok(Listed::Dir(dir, names))
}

/// Bytes one entry takes in the header's `entries` list, its comma included.
fn encoded_len(entry: &Entry) -> usize {
    serde_json::to_vec(entry).map_or(MAX_HEADER, |v| v.len()) + 1
}

/// Do entries of `bytes` in all leave room for the rest of the header?
fn fits(bytes: usize) -> bool {
    bytes + HEADER_FRAME_ROOM <= MAX_HEADER
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn header(fields: Value) -> skiff::frame::Header {
        let mut v = json!({"op": "ls"});
        v.as_object_mut()
            .unwrap()
            .extend(fields.as_object().unwrap().clone());
        skiff::frame::Header::parse(&serde_json::to_vec(&v).unwrap()).unwrap()
    }

    #[test]
    fn page_defaults_caps_and_refusals() {
        let page = |v| Page::of(&header(v));
        assert_eq!(
            page(json!({})),
            Ok(Page {
                offset: 0,
                limit: MAX_PAGE
            })
        );
        assert_eq!(
            page(json!({"offset": 5, "limit": 2})),
            Ok(Page {
                offset: 5,
                limit: 2
            })
        );
        assert_eq!(page(json!({"limit": 1_000_000})).unwrap().limit, MAX_PAGE);
        assert_eq!(page(json!({"offset": null})).unwrap().offset, 0);
        for bad in [
            json!({"limit": 0}),
            json!({"limit": -1}),
            json!({"offset": -1}),
            json!({"offset": "3"}),
            json!({"offset": 1.5}),
        ] {
            assert_eq!(page(bad.clone()).unwrap_err().0, Code::BadRequest, "{bad}");
        }
    }

    /// A directory of `n` empty files named `f00000` ... in a fresh home.
    fn home_with_files(tag: &str, n: usize, name_len: usize) -> Dir {
        let d = std::env::temp_dir().join(format!("skiff-listing-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(d.join("big")).unwrap();
        for i in 0..n {
            let name = format!("f{i:0>width$}", width = name_len - 1);
            std::fs::write(d.join("big").join(name), b"").unwrap();
        }
        std::os::unix::fs::symlink("/etc", d.join("big").join("link")).unwrap();
        Dir::open_ambient_dir(&d, cap_std::ambient_authority()).unwrap()
    }

    /// Follows `next` from offset 0 and returns every name and the page sizes.
    fn all_pages(home: &Dir, limit: usize) -> (Vec<String>, Vec<usize>) {
        let (mut names, mut sizes, mut offset) = (Vec::new(), Vec::new(), Some(0));
        let mut pages = 0;
        while let Some(o) = offset {
            pages += 1;
            assert!(pages < 10_000, "paging does not end");
            let page = Page { offset: o, limit };
            let reply = reply(home, "/big", page, None).unwrap();
            assert!(reply.len() - 4 <= MAX_HEADER);
            let (entries, next) = list(home, "/big", page).unwrap();
            sizes.push(entries.len());
            names.extend(entries.into_iter().map(|e| e.name));
            offset = next;
        }
        (names, sizes)
    }

    #[test]
    fn pages_cover_a_directory_once_in_order() {
        let home = home_with_files("pages", 2501, 6);
        let (names, sizes) = all_pages(&home, MAX_PAGE);
        assert_eq!(sizes, [1000, 1000, 501]);
        assert_eq!(names.len(), 2501, "the symlink is left out");
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        let (names, sizes) = all_pages(&home, 300);
        assert_eq!(names.len(), 2501);
        assert_eq!(sizes, [300, 300, 300, 300, 300, 300, 300, 300, 101]);
        // Past the end: an empty page, no next.
        let (entries, next) = list(
            &home,
            "/big",
            Page {
                offset: 9999,
                limit: 5,
            },
        )
        .unwrap();
        assert!(entries.is_empty() && next.is_none());
    }

    #[test]
    fn a_page_of_long_names_stops_where_the_header_is_full() {
        // 255-byte names: fewer than MAX_PAGE of them fit in 64 KiB.
        let home = home_with_files("long", 400, 255);
        let (names, sizes) = all_pages(&home, MAX_PAGE);
        assert_eq!(names.len(), 400);
        assert!(sizes.len() > 1 && sizes[0] < 400, "{sizes:?}");
    }
}
