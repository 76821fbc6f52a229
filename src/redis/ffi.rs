//! The raw Redis module API, wrapped once so the rest of the glue is safe Rust.
//!
//! Every `unsafe` block of the glue lives here. The functions are the server's own
//! (`RedisModule_*` pointers filled by `RedisModule_Init`); a pointer the running server
//! does not provide is `None`, and every wrapper turns that into an error or a neutral
//! answer instead of calling through null (Valkey 8 and Redis 7.0 differ in places).
//!
//! Invariants: wrappers are only called on the main thread with a context the server gave
//! us for the current callback; strings we create are freed before returning; byte slices
//! handed out borrow server memory only for the duration of the callback.

use crate::effect::LexBound;
use redis_module::raw;
use std::ffi::{c_char, c_int, c_long, c_longlong, c_void, CStr, CString};
use std::ptr;

pub use raw::{RedisModuleCommandFilterCtx, RedisModuleCtx, RedisModuleInfoCtx, RedisModuleString};

/// Calls an optional API function, evaluating to `None` when the server lacks it.
macro_rules! api {
    ($name:ident) => {
        // SAFETY: the function pointers are written once by RedisModule_Init during OnLoad,
        // before any other callback can run, and only read afterwards.
        unsafe { raw::$name }
    };
}

/// A reply from `RedisModule_Call`, copied out of server memory.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Str(Vec<u8>),
    Int(i64),
    Array(Vec<Reply>),
    Error(String),
    Null,
}

impl Reply {
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Str(b) => Some(b),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyType {
    Empty,
    String,
    List,
    Hash,
    Set,
    Zset,
    Stream,
    Other,
}

/// The context of the current callback.
#[derive(Clone, Copy)]
pub struct Ctx(pub *mut RedisModuleCtx);

/// What the server says about the client of a filtered command (`Filter::client`).
#[derive(Debug, Clone, Copy)]
pub struct FilterClient {
    pub in_multi: bool,
    pub db: u32,
}

impl Ctx {
    pub fn log(self, level: &str, msg: &str) {
        let (Ok(level), Ok(msg)) = (CString::new(level), CString::new(msg.replace('\0', " ")))
        else {
            return;
        };
        if let Some(log) = api!(RedisModule_Log) {
            // SAFETY: both strings are NUL-terminated and outlive the call; "%s" consumes one.
            unsafe { log(self.0, level.as_ptr(), c"%s".as_ptr(), msg.as_ptr()) };
        }
    }

    pub fn selected_db(self) -> u32 {
        match api!(RedisModule_GetSelectedDb) {
            // SAFETY: ctx is the live context of this callback.
            Some(f) => u32::try_from(unsafe { f(self.0) }).unwrap_or(0),
            None => 0,
        }
    }

    pub fn select_db(self, db: u32) -> bool {
        let (Some(f), Ok(db)) = (api!(RedisModule_SelectDb), c_int::try_from(db)) else {
            return false;
        };
        // SAFETY: ctx is live; the server validates the db number.
        unsafe { f(self.0, db) == raw::REDISMODULE_OK as c_int }
    }

    /// The number of dbs (`databases`, 1..=INT_MAX), found by selecting (no server
    /// call): doubling, then bisecting, so any count costs ~60 selects.
    pub fn database_count(self) -> u32 {
        let current = self.selected_db();
        let mut hi = 1u32;
        while hi < (1 << 31) && self.select_db(hi) {
            hi = hi.saturating_mul(2);
        }
        // select_db(lo) succeeds, select_db(hi) fails (or hi is past INT_MAX).
        let mut lo = hi / 2;
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.select_db(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.select_db(current);
        lo + 1
    }

    /// Keys in the selected db.
    pub fn db_size(self) -> u64 {
        match api!(RedisModule_DbSize) {
            // SAFETY: live ctx.
            Some(f) => unsafe { f(self.0) },
            None => 0,
        }
    }

    /// A numeric field of an INFO section, read without a command call (so it does not
    /// show in the command stats clients see).
    pub fn server_info_number(self, section: &str, field: &str) -> Option<i64> {
        let [value] = self.server_info_fields(section, [field]);
        std::str::from_utf8(&value?).ok()?.trim().parse().ok()
    }

    /// Several `INFO <section>` fields' raw values, read in one pass (no server call: no
    /// trace in MONITOR, SLOWLOG or commandstats). `None` for a field the section lacks.
    pub fn server_info_fields<const N: usize>(
        self,
        section: &str,
        fields: [&str; N],
    ) -> [Option<Vec<u8>>; N] {
        let mut values = [const { None }; N];
        let (Some(get), Some(field_of), Some(free)) = (
            api!(RedisModule_GetServerInfo),
            api!(RedisModule_ServerInfoGetFieldC),
            api!(RedisModule_FreeServerInfo),
        ) else {
            return values;
        };
        let Ok(section) = CString::new(section) else {
            return values;
        };
        // SAFETY: live ctx; the section name is NUL-terminated; the data is freed below.
        let data = unsafe { get(self.0, section.as_ptr()) };
        if data.is_null() {
            return values;
        }
        for (value, field) in values.iter_mut().zip(fields) {
            let Ok(field) = CString::new(field) else {
                continue;
            };
            // SAFETY: live info data and a NUL-terminated field name; the returned string
            // (if any) lives in `data`, copied out before it is freed.
            let raw = unsafe { field_of(data, field.as_ptr()) };
            if !raw.is_null() {
                // SAFETY: a NUL-terminated string owned by `data`, still live.
                *value = Some(unsafe { CStr::from_ptr(raw) }.to_bytes().to_vec());
            }
        }
        // SAFETY: frees the data obtained above, once.
        unsafe { free(self.0, data) };
        values
    }

    /// Lets the server process client events during a long operation in a callback:
    /// commands are answered `-BUSY <busy_reply>` (allow-busy commands run). The server
    /// rate-limits this to its `hz` and only starts after `busy-reply-threshold`, as for a
    /// long script, so calling it often is cheap.
    pub fn yield_to_clients(self, busy_reply: &'static CStr) {
        if let Some(f) = api!(RedisModule_Yield) {
            // SAFETY: live ctx; the reply string is static, as the server keeps the pointer
            // while it processes events.
            unsafe {
                f(
                    self.0,
                    raw::REDISMODULE_YIELD_FLAG_CLIENTS as c_int,
                    busy_reply.as_ptr(),
                )
            };
        }
    }

    /// Opens `key` to read it without a trace: in write mode, which the server counts in
    /// neither keyspace_hits nor keyspace_misses and which fires no `keymiss` (a read-mode
    /// open does both, on Redis 7.0), with NOTOUCH (LRU/LFU stay as they are); closing it
    /// signals nothing (`init_module` sets NO_IMPLICIT_SIGNAL_MODIFIED). `None` when the key
    /// does not exist.
    pub fn open_read(self, key: &[u8]) -> Option<Key> {
        let name = OwnedString::new(self, key)?;
        let open = api!(RedisModule_OpenKey)?;
        let mode = (raw::REDISMODULE_READ
            | raw::REDISMODULE_WRITE
            | raw::REDISMODULE_OPEN_KEY_NOTOUCH) as c_int;
        // SAFETY: ctx and the key name are live; the handle is closed by Key's Drop.
        let handle = unsafe { open(self.0, name.ptr, mode) };
        if handle.is_null() {
            return None;
        }
        let key = Key {
            handle,
            _name: name,
        };
        if key.key_type() == KeyType::Empty {
            return None;
        }
        Some(key)
    }

    /// Writes a string value with an absolute expiry (or none when `expire_at_ms < 0`).
    pub fn put_string(self, key: &[u8], value: &[u8], expire_at_ms: i64) -> Result<(), String> {
        let name = OwnedString::new(self, key).ok_or("cannot create key name")?;
        let val = OwnedString::new(self, value).ok_or("cannot create value")?;
        let open = api!(RedisModule_OpenKey).ok_or("no OpenKey")?;
        let set = api!(RedisModule_StringSet).ok_or("no StringSet")?;
        let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
        // SAFETY: live ctx and strings; the handle is closed below on every path.
        let handle = unsafe { open(self.0, name.ptr, mode) };
        if handle.is_null() {
            return Err("cannot open key for writing".into());
        }
        let key = Key {
            handle,
            _name: name,
        };
        // SAFETY: handle is a writable key handle; val is live.
        let ok = unsafe { set(key.handle, val.ptr) } == raw::REDISMODULE_OK as c_int;
        if !ok {
            return Err("StringSet failed".into());
        }
        if expire_at_ms >= 0 {
            let set_abs = api!(RedisModule_SetAbsExpire).ok_or("no SetAbsExpire")?;
            // SAFETY: handle is a writable, non-empty key handle.
            unsafe { set_abs(key.handle, expire_at_ms) };
        }
        Ok(())
    }

    /// Opens `key` (which does not exist) to write a new value with the key API.
    fn open_new(self, key: &[u8]) -> Result<Key, String> {
        let name = OwnedString::new(self, key).ok_or("cannot create key name")?;
        let open = api!(RedisModule_OpenKey).ok_or("no OpenKey")?;
        let mode = (raw::REDISMODULE_READ | raw::REDISMODULE_WRITE) as c_int;
        // SAFETY: live ctx and name; the handle is closed by Key's Drop.
        let handle = unsafe { open(self.0, name.ptr, mode) };
        if handle.is_null() {
            return Err("cannot open key for writing".into());
        }
        Ok(Key {
            handle,
            _name: name,
        })
    }

    /// Sets an absolute expiry (unix ms; negative: none) on a key that has a value.
    fn set_abs_expire(key: &Key, expire_at_ms: i64) -> Result<(), String> {
        if expire_at_ms >= 0 {
            let set_abs = api!(RedisModule_SetAbsExpire).ok_or("no SetAbsExpire")?;
            // SAFETY: handle is a writable, non-empty key handle.
            unsafe { set_abs(key.handle, expire_at_ms) };
        }
        Ok(())
    }

    /// Writes a new hash with the key API (no server call: nothing in commandstats,
    /// SLOWLOG or MONITOR, and no keyspace event but `new`). The server converts the
    /// encoding at its thresholds as HSET would.
    pub fn put_hash(
        self,
        key: &[u8],
        pairs: &[(Vec<u8>, Vec<u8>)],
        expire_at_ms: i64,
    ) -> Result<(), String> {
        let k = self.open_new(key)?;
        let hset = api!(RedisModule_HashSet).ok_or("no HashSet")?;
        for (field, value) in pairs {
            let f = OwnedString::new(self, field).ok_or("cannot create field")?;
            let v = OwnedString::new(self, value).ok_or("cannot create value")?;
            // SAFETY: writable key handle, live strings, NULL-terminated variadic list.
            unsafe {
                hset(
                    k.handle,
                    raw::REDISMODULE_HASH_NONE as c_int,
                    f.ptr,
                    v.ptr,
                    ptr::null_mut::<RedisModuleString>(),
                )
            };
        }
        Self::set_abs_expire(&k, expire_at_ms)
    }

    /// Writes a new list with the key API (as `put_hash`).
    pub fn put_list(self, key: &[u8], items: &[Vec<u8>], expire_at_ms: i64) -> Result<(), String> {
        let k = self.open_new(key)?;
        let push = api!(RedisModule_ListPush).ok_or("no ListPush")?;
        for item in items {
            let e = OwnedString::new(self, item).ok_or("cannot create element")?;
            // SAFETY: writable key handle and a live string.
            let ok = unsafe { push(k.handle, raw::REDISMODULE_LIST_TAIL as c_int, e.ptr) };
            if ok != raw::REDISMODULE_OK as c_int {
                return Err("ListPush failed".into());
            }
        }
        Self::set_abs_expire(&k, expire_at_ms)
    }

    /// Writes a new sorted set with the key API (as `put_hash`).
    pub fn put_zset(
        self,
        key: &[u8],
        pairs: &[(Vec<u8>, f64)],
        expire_at_ms: i64,
    ) -> Result<(), String> {
        let k = self.open_new(key)?;
        let add = api!(RedisModule_ZsetAdd).ok_or("no ZsetAdd")?;
        for (member, score) in pairs {
            let m = OwnedString::new(self, member).ok_or("cannot create member")?;
            let mut flags: c_int = 0;
            // SAFETY: writable key handle, a live string and a flags cell.
            let ok = unsafe { add(k.handle, *score, m.ptr, &mut flags) };
            if ok != raw::REDISMODULE_OK as c_int {
                return Err("ZsetAdd failed (NaN score?)".into());
            }
        }
        Self::set_abs_expire(&k, expire_at_ms)
    }

    /// Calls `f` with each batch of keys `SCAN` returns for the selected db (a key may
    /// come twice while the db rehashes).
    pub fn scan_keys(self, mut f: impl FnMut(&[&[u8]])) {
        let mut cursor = b"0".to_vec();
        while let Reply::Array(parts) = self.call("SCAN", &[&cursor, b"COUNT", b"1000"]) {
            let (Some(Reply::Str(next)), Some(Reply::Array(keys))) = (parts.first(), parts.get(1))
            else {
                break;
            };
            let keys: Vec<&[u8]> = keys.iter().filter_map(Reply::as_bytes).collect();
            f(&keys);
            if next.as_slice() == b"0" {
                break;
            }
            cursor = next.clone();
        }
    }

    /// `RedisModule_Call` with binary-safe arguments, errors returned as replies, and no
    /// propagation to AOF or replicas.
    pub fn call(self, command: &str, args: &[&[u8]]) -> Reply {
        let Some(call) = api!(RedisModule_Call) else {
            return Reply::Error("RedisModule_Call unavailable".into());
        };
        let Ok(cmd) = CString::new(command) else {
            return Reply::Error("bad command name".into());
        };
        let owned: Vec<OwnedString> = args
            .iter()
            .filter_map(|a| OwnedString::new(self, a))
            .collect();
        if owned.len() != args.len() {
            return Reply::Error("cannot create arguments".into());
        }
        let mut argv: Vec<*mut RedisModuleString> = owned.iter().map(|s| s.ptr).collect();
        // SAFETY: "Ev" takes (RedisModuleString **argv, size_t argc); argv holds live strings.
        let reply = unsafe {
            call(
                self.0,
                cmd.as_ptr(),
                c"Ev".as_ptr(),
                argv.as_mut_ptr(),
                argv.len(),
            )
        };
        if reply.is_null() {
            return Reply::Error(format!(
                "{command} failed (errno {})",
                std::io::Error::last_os_error()
            ));
        }
        let out = copy_reply(reply);
        if let Some(free) = api!(RedisModule_FreeCallReply) {
            // SAFETY: reply came from RedisModule_Call and is freed once.
            unsafe { free(reply) };
        }
        out
    }

    pub fn reply_error(self, msg: &str) {
        let msg = CString::new(msg.replace(['\r', '\n', '\0'], " ")).unwrap_or_default();
        if let Some(f) = api!(RedisModule_ReplyWithError) {
            // SAFETY: live ctx of a command callback; msg is NUL-terminated.
            unsafe { f(self.0, msg.as_ptr()) };
        }
    }

    pub fn reply_simple(self, msg: &str) {
        let msg = CString::new(msg.replace(['\r', '\n', '\0'], " ")).unwrap_or_default();
        if let Some(f) = api!(RedisModule_ReplyWithSimpleString) {
            // SAFETY: live ctx; msg is NUL-terminated.
            unsafe { f(self.0, msg.as_ptr()) };
        }
    }

    /// Replies with a verbatim text (RESP3) or a bulk string (RESP2): what redis-cli prints raw.
    pub fn reply_text(self, text: &str) {
        if let Some(f) = api!(RedisModule_ReplyWithVerbatimString) {
            // SAFETY: live ctx; the buffer and its length describe `text`.
            unsafe { f(self.0, text.as_ptr() as *const c_char, text.len()) };
        } else if let Some(f) = api!(RedisModule_ReplyWithStringBuffer) {
            // SAFETY: as above.
            unsafe { f(self.0, text.as_ptr() as *const c_char, text.len()) };
        }
    }

    /// Replies with a value tree (`Out`): maps, sets and doubles become RESP3 types for
    /// a RESP3 client, and the server turns them into RESP2 arrays and bulk strings.
    pub fn reply_value(self, value: &Out) {
        // Each aggregate is followed by exactly its announced number of elements (a map:
        // two per entry), as the server requires.
        match value {
            Out::Null => {
                if let Some(f) = api!(RedisModule_ReplyWithNull) {
                    // SAFETY: live ctx of a command callback.
                    unsafe { f(self.0) };
                }
            }
            Out::Int(n) => {
                if let Some(f) = api!(RedisModule_ReplyWithLongLong) {
                    // SAFETY: live ctx of a command callback.
                    unsafe { f(self.0, *n) };
                }
            }
            Out::Double(d) => {
                if let Some(f) = api!(RedisModule_ReplyWithDouble) {
                    // SAFETY: live ctx of a command callback.
                    unsafe { f(self.0, *d) };
                }
            }
            Out::Bulk(b) => {
                if let Some(f) = api!(RedisModule_ReplyWithStringBuffer) {
                    // SAFETY: live ctx; pointer and length describe `b`.
                    unsafe { f(self.0, b.as_ptr() as *const c_char, b.len()) };
                }
            }
            Out::Simple(s) => self.reply_simple(s),
            Out::Array(items) | Out::Set(items) => {
                let aggregate = match value {
                    Out::Set(_) => api!(RedisModule_ReplyWithSet),
                    _ => api!(RedisModule_ReplyWithArray),
                };
                if let Some(f) = aggregate {
                    // SAFETY: live ctx; the items follow.
                    unsafe { f(self.0, items.len() as c_long) };
                }
                for item in items {
                    self.reply_value(item);
                }
            }
            Out::Map(pairs) => {
                if let Some(f) = api!(RedisModule_ReplyWithMap) {
                    // SAFETY: live ctx; the pairs follow.
                    unsafe { f(self.0, pairs.len() as c_long) };
                }
                for (k, v) in pairs {
                    self.reply_value(k);
                    self.reply_value(v);
                }
            }
        }
    }

    pub fn reply_array_of_text(self, lines: &[String]) {
        let (Some(arr), Some(buf)) = (
            api!(RedisModule_ReplyWithArray),
            api!(RedisModule_ReplyWithStringBuffer),
        ) else {
            return;
        };
        // SAFETY: live ctx; exactly `lines.len()` elements follow.
        unsafe { arr(self.0, lines.len() as c_long) };
        for line in lines {
            // SAFETY: live ctx; pointer and length describe `line`.
            unsafe { buf(self.0, line.as_ptr() as *const c_char, line.len()) };
        }
    }
}

/// A reply to build with `Ctx::reply_value`.
#[derive(Debug, Clone, PartialEq)]
pub enum Out {
    Null,
    Int(i64),
    Double(f64),
    Bulk(Vec<u8>),
    Simple(String),
    Array(Vec<Out>),
    Set(Vec<Out>),
    Map(Vec<(Out, Out)>),
}

/// A string created in the server's memory, freed on drop.
pub struct OwnedString {
    ctx: Ctx,
    ptr: *mut RedisModuleString,
}

impl OwnedString {
    pub fn new(ctx: Ctx, bytes: &[u8]) -> Option<Self> {
        let create = api!(RedisModule_CreateString)?;
        // SAFETY: the server copies `bytes`; ctx is live (null is allowed too).
        let ptr = unsafe { create(ctx.0, bytes.as_ptr() as *const c_char, bytes.len()) };
        if ptr.is_null() {
            None
        } else {
            Some(OwnedString { ctx, ptr })
        }
    }
}

impl Ctx {
    /// PUBLISHes `message` on `channel`, as a client's PUBLISH would (subscribers of the
    /// channel or a matching pattern get it).
    pub fn publish(self, channel: &str, message: &str) {
        let (Some(publish), Some(c), Some(m)) = (
            api!(RedisModule_PublishMessage),
            OwnedString::new(self, channel.as_bytes()),
            OwnedString::new(self, message.as_bytes()),
        ) else {
            return;
        };
        // SAFETY: ctx is live on the main thread; both strings live until after the call.
        unsafe { publish(self.0, c.ptr, m.ptr) };
    }
}

impl Drop for OwnedString {
    fn drop(&mut self) {
        if let Some(free) = api!(RedisModule_FreeString) {
            // SAFETY: ptr was created by CreateString with this ctx and is freed once.
            unsafe { free(self.ctx.0, self.ptr) };
        }
    }
}

/// Copies a command's arguments (argv[0] is the command name).
pub fn args(argv: *mut *mut RedisModuleString, argc: c_int) -> Vec<Vec<u8>> {
    let n = usize::try_from(argc).unwrap_or(0);
    if argv.is_null() {
        return Vec::new();
    }
    (0..n)
        .map(|i| {
            // SAFETY: the server passes argc live strings in argv for the call's duration.
            let s = unsafe { *argv.add(i) };
            string_bytes(s).to_vec()
        })
        .collect()
}

/// Borrows the bytes of a server string for the duration of the callback.
pub fn string_bytes<'a>(s: *const RedisModuleString) -> &'a [u8] {
    let Some(ptr_len) = api!(RedisModule_StringPtrLen) else {
        return &[];
    };
    if s.is_null() {
        return &[];
    }
    let mut len = 0usize;
    // SAFETY: s is a live server string; the server returns a pointer valid while s lives.
    let p = unsafe { ptr_len(s, &mut len) };
    if p.is_null() {
        return &[];
    }
    // SAFETY: p points to len readable bytes owned by s.
    unsafe { std::slice::from_raw_parts(p as *const u8, len) }
}

/// An open key handle, closed on drop.
pub struct Key {
    handle: *mut raw::RedisModuleKey,
    _name: OwnedString,
}

impl Drop for Key {
    fn drop(&mut self) {
        if let Some(close) = api!(RedisModule_CloseKey) {
            // SAFETY: the handle came from OpenKey and is closed once.
            unsafe { close(self.handle) };
        }
    }
}

impl Key {
    pub fn key_type(&self) -> KeyType {
        let Some(f) = api!(RedisModule_KeyType) else {
            return KeyType::Other;
        };
        // SAFETY: live key handle.
        match unsafe { f(self.handle) } as isize {
            raw::REDISMODULE_KEYTYPE_EMPTY => KeyType::Empty,
            raw::REDISMODULE_KEYTYPE_STRING => KeyType::String,
            raw::REDISMODULE_KEYTYPE_LIST => KeyType::List,
            raw::REDISMODULE_KEYTYPE_HASH => KeyType::Hash,
            raw::REDISMODULE_KEYTYPE_SET => KeyType::Set,
            raw::REDISMODULE_KEYTYPE_ZSET => KeyType::Zset,
            raw::REDISMODULE_KEYTYPE_STREAM => KeyType::Stream,
            _ => KeyType::Other,
        }
    }

    /// Absolute expiry in unix ms, or -1.
    pub fn abs_expire(&self) -> i64 {
        match api!(RedisModule_GetAbsExpire) {
            // SAFETY: live key handle.
            Some(f) => unsafe { f(self.handle) },
            None => -1,
        }
    }

    pub fn len(&self) -> usize {
        match api!(RedisModule_ValueLength) {
            // SAFETY: live key handle.
            Some(f) => unsafe { f(self.handle) },
            None => 0,
        }
    }

    /// The value of a string key through direct memory access.
    ///
    /// Only for values known to be raw-encoded with one reference: on any other value
    /// the server replaces the object (even for reads), and a command that still holds
    /// the old one — INCR and INCRBYFLOAT reply with it after notifying — would use
    /// freed memory. `capture` decides when this is safe.
    pub fn string_value(&self) -> Option<Vec<u8>> {
        let dma = api!(RedisModule_StringDMA)?;
        let mut len = 0usize;
        // SAFETY: live key handle of type string opened for reading.
        let p = unsafe { dma(self.handle, &mut len, raw::REDISMODULE_READ as c_int) };
        if p.is_null() {
            return if len == 0 { Some(Vec::new()) } else { None };
        }
        // SAFETY: DMA returns len readable bytes valid while the key is open.
        Some(unsafe { std::slice::from_raw_parts(p as *const u8, len) }.to_vec())
    }

    /// Bytes `offset..offset + len` of a raw-encoded string (clamped to its length),
    /// through direct memory access: only for values known to be raw (see
    /// `string_value`), which a read leaves unchanged.
    pub fn string_range(&self, offset: u64, len: u64) -> Option<Vec<u8>> {
        let dma = api!(RedisModule_StringDMA)?;
        let mut total = 0usize;
        // SAFETY: live key handle of type string opened for reading.
        let p = unsafe { dma(self.handle, &mut total, raw::REDISMODULE_READ as c_int) };
        let start = usize::try_from(offset).ok()?.min(total);
        let end = start.saturating_add(usize::try_from(len).ok()?).min(total);
        if p.is_null() {
            return (total == 0).then(Vec::new);
        }
        // SAFETY: DMA returns `total` readable bytes valid while the key is open.
        let all = unsafe { std::slice::from_raw_parts(p as *const u8, total) };
        Some(all[start..end].to_vec())
    }

    /// The lowest and the highest score of a non-empty zset.
    pub fn zset_score_bounds(&self) -> Option<(f64, f64)> {
        let (first, last, current, stop, free) = (
            api!(RedisModule_ZsetFirstInScoreRange)?,
            api!(RedisModule_ZsetLastInScoreRange)?,
            api!(RedisModule_ZsetRangeCurrentElement)?,
            api!(RedisModule_ZsetRangeStop)?,
            api!(RedisModule_FreeString)?,
        );
        let edge = |start: bool| -> Option<f64> {
            let (lo, hi) = (f64::NEG_INFINITY, f64::INFINITY);
            // SAFETY: live zset handle; the range is stopped below.
            let ok = unsafe {
                if start {
                    first(self.handle, lo, hi, 0, 0)
                } else {
                    last(self.handle, lo, hi, 0, 0)
                }
            } == raw::REDISMODULE_OK as c_int;
            let mut score = 0f64;
            let ele = if ok {
                // SAFETY: active range; the element is a new string we free.
                unsafe { current(self.handle, &mut score) }
            } else {
                ptr::null_mut()
            };
            if !ele.is_null() {
                // SAFETY: owned element string, freed once.
                unsafe { free(ptr::null_mut(), ele) };
            }
            // SAFETY: stops the range (harmless when none is active).
            unsafe { stop(self.handle) };
            (!ele.is_null()).then_some(score)
        };
        Some((edge(true)?, edge(false)?))
    }

    /// Whether a zset holds a member within the lex range (`None`: the server could not
    /// tell). Exact only when all scores are equal: the server's lex search assumes it.
    pub fn zset_has_lex(&self, min: &LexBound, max: &LexBound) -> Option<bool> {
        let (first, end, stop) = (
            api!(RedisModule_ZsetFirstInLexRange)?,
            api!(RedisModule_ZsetRangeEndReached)?,
            api!(RedisModule_ZsetRangeStop)?,
        );
        let word = |b: &LexBound| match b {
            LexBound::NegInf => b"-".to_vec(),
            LexBound::PosInf => b"+".to_vec(),
            LexBound::Inclusive(m) => [b"[".as_slice(), m].concat(),
            LexBound::Exclusive(m) => [b"(".as_slice(), m].concat(),
        };
        let ctx = self._name.ctx;
        let (lo, hi) = (
            OwnedString::new(ctx, &word(min))?,
            OwnedString::new(ctx, &word(max))?,
        );
        // SAFETY: live zset handle and range strings; the range is stopped below.
        let ok = unsafe { first(self.handle, lo.ptr, hi.ptr) } == raw::REDISMODULE_OK as c_int;
        // SAFETY: the range iterator (if started) is live until `stop`.
        let found = ok && unsafe { end(self.handle) } == 0;
        // SAFETY: stops the range.
        unsafe { stop(self.handle) };
        ok.then_some(found)
    }

    /// List element at `index` (negative from the tail).
    pub fn list_get(&self, index: i64) -> Option<Vec<u8>> {
        let get = api!(RedisModule_ListGet)?;
        // SAFETY: live list key handle; the returned string is ours to free.
        let s = unsafe { get(self.handle, index as c_long) };
        if s.is_null() {
            return None;
        }
        let bytes = string_bytes(s).to_vec();
        if let Some(free) = api!(RedisModule_FreeString) {
            // SAFETY: ListGet returns a new string owned by the caller.
            unsafe { free(ptr::null_mut(), s) };
        }
        Some(bytes)
    }

    pub fn list_all(&self) -> Option<Vec<Vec<u8>>> {
        // Sequential ListGet is O(1) per step: the server caches the iterator position.
        (0..self.len() as i64).map(|i| self.list_get(i)).collect()
    }

    /// Every (field, value) of a hash, or every (member, empty) of a set.
    pub fn scan_pairs(&self) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
        let (create, destroy, scan) = (
            api!(RedisModule_ScanCursorCreate)?,
            api!(RedisModule_ScanCursorDestroy)?,
            api!(RedisModule_ScanKey)?,
        );
        unsafe extern "C" fn collect(
            _key: *mut raw::RedisModuleKey,
            field: *mut RedisModuleString,
            value: *mut RedisModuleString,
            privdata: *mut c_void,
        ) {
            // SAFETY: privdata is the &mut Vec passed below, alive for the whole scan.
            let out = unsafe { &mut *(privdata as *mut Vec<(Vec<u8>, Vec<u8>)>) };
            out.push((string_bytes(field).to_vec(), string_bytes(value).to_vec()));
        }
        let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(self.len());
        // SAFETY: the cursor is created here and destroyed below.
        let cursor = unsafe { create() };
        loop {
            // SAFETY: live key and cursor; the callback only touches `out`.
            let more = unsafe {
                scan(
                    self.handle,
                    cursor,
                    Some(collect),
                    &mut out as *mut _ as *mut c_void,
                )
            };
            if more == 0 {
                break;
            }
        }
        // SAFETY: cursor from ScanCursorCreate, destroyed once.
        unsafe { destroy(cursor) };
        // SCAN may return an element twice while a dict rehashes; a value is a set of them.
        out.sort();
        out.dedup_by(|a, b| a.0 == b.0);
        Some(out)
    }

    pub fn hash_get(&self, field: &[u8]) -> Option<Vec<u8>> {
        let get = api!(RedisModule_HashGet)?;
        let ctx = self._name.ctx;
        let f = OwnedString::new(ctx, field)?;
        let mut value: *mut RedisModuleString = ptr::null_mut();
        // SAFETY: "fields as RedisModuleString, then NULL": one field and its out-pointer.
        unsafe {
            get(
                self.handle,
                raw::REDISMODULE_HASH_NONE as c_int,
                f.ptr,
                &mut value as *mut *mut RedisModuleString,
                ptr::null_mut::<c_void>(),
            )
        };
        if value.is_null() {
            return None;
        }
        let bytes = string_bytes(value).to_vec();
        if let Some(free) = api!(RedisModule_FreeString) {
            // SAFETY: HashGet hands out a new string; without auto-memory we free it.
            unsafe { free(ctx.0, value) };
        }
        Some(bytes)
    }

    pub fn zset_score(&self, member: &[u8]) -> Option<f64> {
        let score_of = api!(RedisModule_ZsetScore)?;
        let m = OwnedString::new(self._name.ctx, member)?;
        let mut score = 0f64;
        // SAFETY: live zset key handle and member string.
        let ok =
            unsafe { score_of(self.handle, m.ptr, &mut score) } == raw::REDISMODULE_OK as c_int;
        ok.then_some(score)
    }

    pub fn zset_all(&self) -> Option<Vec<(Vec<u8>, f64)>> {
        let (first, current, next, end, stop) = (
            api!(RedisModule_ZsetFirstInScoreRange)?,
            api!(RedisModule_ZsetRangeCurrentElement)?,
            api!(RedisModule_ZsetRangeNext)?,
            api!(RedisModule_ZsetRangeEndReached)?,
            api!(RedisModule_ZsetRangeStop)?,
        );
        let mut out = Vec::with_capacity(self.len());
        // SAFETY: live zset handle; the range is stopped below.
        let started = unsafe { first(self.handle, f64::NEG_INFINITY, f64::INFINITY, 0, 0) }
            == raw::REDISMODULE_OK as c_int;
        if !started {
            return Some(out);
        }
        // SAFETY: the range iterator is active until `stop`.
        while unsafe { end(self.handle) } == 0 {
            let mut score = 0f64;
            // SAFETY: active range; the element is a new string we free.
            let ele = unsafe { current(self.handle, &mut score) };
            if ele.is_null() {
                break;
            }
            out.push((string_bytes(ele).to_vec(), score));
            if let Some(free) = api!(RedisModule_FreeString) {
                // SAFETY: the element string is owned by us.
                unsafe { free(ptr::null_mut(), ele) };
            }
            // SAFETY: active range.
            if unsafe { next(self.handle) } == 0 {
                break;
            }
        }
        // SAFETY: stops the active range.
        unsafe { stop(self.handle) };
        Some(out)
    }

    /// The ids of up to `n` entries of a stream, from `end` (inclusive) backwards.
    pub fn stream_ids_back(&self, end: (u64, u64), n: usize) -> Option<Vec<(u64, u64)>> {
        let (start, next_id, next_field, stop) = (
            api!(RedisModule_StreamIteratorStart)?,
            api!(RedisModule_StreamIteratorNextID)?,
            api!(RedisModule_StreamIteratorNextField)?,
            api!(RedisModule_StreamIteratorStop)?,
        );
        let mut end = raw::RedisModuleStreamID {
            ms: end.0,
            seq: end.1,
        };
        let flags = raw::REDISMODULE_STREAM_ITERATOR_REVERSE as c_int;
        // SAFETY: live stream handle; a null start means from the first entry; `end` lives
        // through the call (the server copies it).
        if unsafe { start(self.handle, flags, ptr::null_mut(), &mut end) }
            != raw::REDISMODULE_OK as c_int
        {
            return None;
        }
        let mut out = Vec::with_capacity(n.min(1024));
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let mut nfields: c_long = 0;
        // SAFETY: the iterator is active.
        while out.len() < n
            && unsafe { next_id(self.handle, &mut id, &mut nfields) }
                == raw::REDISMODULE_OK as c_int
        {
            out.push((id.ms, id.seq));
            // A reverse iterator must pass an entry's fields before the previous entry
            // (t_stream.c streamIteratorGetID seeks back from the last field read).
            let mut f: *mut RedisModuleString = ptr::null_mut();
            let mut v: *mut RedisModuleString = ptr::null_mut();
            // SAFETY: positioned on an entry; f/v are only written.
            while unsafe { next_field(self.handle, &mut f, &mut v) } == raw::REDISMODULE_OK as c_int
            {
            }
        }
        // SAFETY: stops the active iterator.
        unsafe { stop(self.handle) };
        Some(out)
    }

    /// The first (`last == false`) or last entry of a stream: id and fields.
    #[allow(clippy::type_complexity)]
    pub fn stream_edge(&self, last: bool) -> Option<(u64, u64, Vec<(Vec<u8>, Vec<u8>)>)> {
        let (start, next_id, next_field, stop) = (
            api!(RedisModule_StreamIteratorStart)?,
            api!(RedisModule_StreamIteratorNextID)?,
            api!(RedisModule_StreamIteratorNextField)?,
            api!(RedisModule_StreamIteratorStop)?,
        );
        let flags = if last {
            raw::REDISMODULE_STREAM_ITERATOR_REVERSE as c_int
        } else {
            0
        };
        // SAFETY: live stream handle; null start/end mean the whole stream.
        if unsafe { start(self.handle, flags, ptr::null_mut(), ptr::null_mut()) }
            != raw::REDISMODULE_OK as c_int
        {
            return None;
        }
        let mut id = raw::RedisModuleStreamID { ms: 0, seq: 0 };
        let mut nfields: c_long = 0;
        // SAFETY: the iterator is active.
        let found =
            unsafe { next_id(self.handle, &mut id, &mut nfields) } == raw::REDISMODULE_OK as c_int;
        let mut fields = Vec::new();
        if found {
            loop {
                let mut f: *mut RedisModuleString = ptr::null_mut();
                let mut v: *mut RedisModuleString = ptr::null_mut();
                // SAFETY: the iterator is positioned on an entry; f/v are valid until the next call.
                if unsafe { next_field(self.handle, &mut f, &mut v) }
                    != raw::REDISMODULE_OK as c_int
                {
                    break;
                }
                fields.push((string_bytes(f).to_vec(), string_bytes(v).to_vec()));
            }
        }
        // SAFETY: stops the active iterator.
        unsafe { stop(self.handle) };
        found.then_some((id.ms, id.seq, fields))
    }
}

fn copy_reply(reply: *mut raw::RedisModuleCallReply) -> Reply {
    let (Some(kind), Some(strp), Some(int), Some(len), Some(elem)) = (
        api!(RedisModule_CallReplyType),
        api!(RedisModule_CallReplyStringPtr),
        api!(RedisModule_CallReplyInteger),
        api!(RedisModule_CallReplyLength),
        api!(RedisModule_CallReplyArrayElement),
    ) else {
        return Reply::Error("call reply API unavailable".into());
    };
    let bytes = |r| {
        let mut n = 0usize;
        // SAFETY: r is a live reply; the pointer is valid while it lives.
        let p = unsafe { strp(r, &mut n) };
        if p.is_null() {
            Vec::new()
        } else {
            // SAFETY: p points to n bytes owned by the reply.
            unsafe { std::slice::from_raw_parts(p as *const u8, n) }.to_vec()
        }
    };
    // SAFETY: reply is live for this whole function.
    match unsafe { kind(reply) } as isize {
        raw::REDISMODULE_REPLY_STRING => Reply::Str(bytes(reply)),
        raw::REDISMODULE_REPLY_ERROR => Reply::Error(String::from_utf8_lossy(&bytes(reply)).into()),
        // SAFETY: live integer reply.
        raw::REDISMODULE_REPLY_INTEGER => Reply::Int(unsafe { int(reply) }),
        raw::REDISMODULE_REPLY_ARRAY => {
            // SAFETY: live array reply; elements are owned by it.
            let n = unsafe { len(reply) };
            Reply::Array(
                (0..n)
                    .map(|i| copy_reply(unsafe { elem(reply, i) }))
                    .collect(),
            )
        }
        _ => {
            let b = bytes(reply);
            if b.is_empty() {
                Reply::Null
            } else {
                Reply::Str(b)
            }
        }
    }
}

/// The argv of a command seen by the command filter.
pub struct Filter(pub *mut RedisModuleCommandFilterCtx);

impl Filter {
    pub fn len(&self) -> usize {
        match api!(RedisModule_CommandFilterArgsCount) {
            // SAFETY: live filter context of this callback.
            Some(f) => unsafe { f(self.0) }.max(0) as usize,
            None => 0,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn arg(&self, i: usize) -> &[u8] {
        let Some(get) = api!(RedisModule_CommandFilterArgGet) else {
            return &[];
        };
        // SAFETY: live filter context; out-of-range positions return null.
        let s = unsafe { get(self.0, i as c_int) };
        string_bytes(s)
    }

    /// Whether the command writes a key, from the server's own key specs (flags RW, OW or
    /// RM on any key). Works in a filter: the server ignores the context here.
    pub fn writes_a_key(&self) -> bool {
        let write_flags = (raw::REDISMODULE_CMD_KEY_RW
            | raw::REDISMODULE_CMD_KEY_OW
            | raw::REDISMODULE_CMD_KEY_RM) as c_int;
        self.key_specs()
            .iter()
            .any(|&(_, flags)| flags & write_flags != 0)
    }

    /// The keys the command names, from the server's key specs (or its getkeys
    /// function): none for an unknown command or a wrong arity.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.key_specs()
            .iter()
            .map(|&(pos, _)| self.arg(pos).to_vec())
            .collect()
    }

    /// (argument position, key-spec flags) of every key the command names.
    fn key_specs(&self) -> Vec<(usize, c_int)> {
        let (Some(keys_of), Some(get), Some(free)) = (
            api!(RedisModule_GetCommandKeysWithFlags),
            api!(RedisModule_CommandFilterArgGet),
            api!(RedisModule_Free),
        ) else {
            return Vec::new();
        };
        let n = self.len();
        // SAFETY: live filter context; positions 0..n exist.
        let mut argv: Vec<*mut RedisModuleString> =
            (0..n).map(|i| unsafe { get(self.0, i as c_int) }).collect();
        let mut count: c_int = 0;
        let mut flags: *mut c_int = ptr::null_mut();
        // SAFETY: argv holds n live argument strings; the server allocates the outputs.
        let positions = unsafe {
            keys_of(
                ptr::null_mut(),
                argv.as_mut_ptr(),
                n as c_int,
                &mut count,
                &mut flags,
            )
        };
        let count = count.max(0) as usize;
        let mut specs = Vec::new();
        if !positions.is_null() {
            // SAFETY: the server wrote `count` positions (and as many flags, if any).
            let at = unsafe { std::slice::from_raw_parts(positions, count) };
            let fl = if flags.is_null() {
                &[][..]
            } else {
                // SAFETY: as above.
                unsafe { std::slice::from_raw_parts(flags, count) }
            };
            for (i, &pos) in at.iter().enumerate() {
                if let Ok(pos) = usize::try_from(pos) {
                    if pos < n {
                        specs.push((pos, fl.get(i).copied().unwrap_or(0)));
                    }
                }
            }
            // SAFETY: allocated by the server for us; freed once.
            unsafe { free(positions.cast::<c_void>()) };
        }
        if !flags.is_null() {
            // SAFETY: as above.
            unsafe { free(flags.cast::<c_void>()) };
        }
        specs
    }

    /// Whether the client whose command this is is inside MULTI (so the command will be
    /// queued, not run): `None` where the server cannot say (Redis 7.0's filters have no
    /// client; 7.2 and Valkey 8 do).
    pub fn client_in_multi(&self) -> Option<bool> {
        self.client().map(|c| c.in_multi)
    }

    /// The client whose command this is: whether it is in MULTI, and its selected db
    /// (`None` where the server cannot say, as above, or for a script's own client).
    pub fn client(&self) -> Option<FilterClient> {
        let (client_id, info_of) = (
            api!(RedisModule_CommandFilterGetClientId)?,
            api!(RedisModule_GetClientInfoById)?,
        );
        // SAFETY: live filter context.
        let id = unsafe { client_id(self.0) };
        let mut info = raw::RedisModuleClientInfo {
            version: 1,
            flags: 0,
            id: 0,
            addr: [0; 46],
            port: 0,
            db: 0,
        };
        // SAFETY: `info` is a version-1 client info the server fills.
        let ok = unsafe { info_of(&mut info as *mut _ as *mut c_void, id) }
            == raw::REDISMODULE_OK as c_int;
        ok.then_some(FilterClient {
            in_multi: info.flags & u64::from(raw::REDISMODULE_CLIENTINFO_FLAG_MULTI) != 0,
            db: u32::from(info.db),
        })
    }

    /// The address of argument `i`'s object: the same object a notification about that
    /// key receives (see `hints`).
    pub fn arg_object(&self, i: usize) -> usize {
        match api!(RedisModule_CommandFilterArgGet) {
            // SAFETY: live filter context; out-of-range positions return null.
            Some(get) => (unsafe { get(self.0, i as c_int) }) as usize,
            None => 0,
        }
    }

    /// Replaces the whole command with `args` (used to turn a refused write into the
    /// module's refusal command, so the server never executes it).
    pub fn replace_all(&self, args: &[&[u8]]) {
        let (Some(delete), Some(insert), Some(create)) = (
            api!(RedisModule_CommandFilterArgDelete),
            api!(RedisModule_CommandFilterArgInsert),
            api!(RedisModule_CreateString),
        ) else {
            return;
        };
        for _ in 0..self.len() {
            // SAFETY: deleting position 0 of a live filter argv while it is non-empty.
            unsafe { delete(self.0, 0) };
        }
        for (i, a) in args.iter().enumerate() {
            // SAFETY: the server takes ownership of the new string (created without ctx).
            let s = unsafe { create(ptr::null_mut(), a.as_ptr() as *const c_char, a.len()) };
            // SAFETY: inserting at the end of the live argv.
            unsafe { insert(self.0, i as c_int, s) };
        }
    }
}

// ---- registration -------------------------------------------------------------------

pub type CommandFn =
    unsafe extern "C" fn(*mut RedisModuleCtx, *mut *mut RedisModuleString, c_int) -> c_int;

/// The arguments of a module command as byte slices.
pub fn command_args<'a>(argv: *mut *mut RedisModuleString, argc: c_int) -> Vec<&'a [u8]> {
    if argv.is_null() || argc <= 0 {
        return Vec::new();
    }
    // SAFETY: the server passes argc valid strings in argv for the callback's duration.
    let strings = unsafe { std::slice::from_raw_parts(argv, argc as usize) };
    strings.iter().map(|s| string_bytes(*s)).collect()
}

/// Whether a script or a transaction is executing right now (the server's global
/// state, readable from a command filter: a command filtered then is one of its own).
pub fn inside_script_or_exec() -> bool {
    match api!(RedisModule_GetContextFlags) {
        // SAFETY: the server checks ctx for NULL and reports only global state then.
        Some(f) => {
            let flags = unsafe { f(ptr::null_mut()) };
            let unit = (raw::REDISMODULE_CTX_FLAGS_LUA | raw::REDISMODULE_CTX_FLAGS_MULTI) as c_int;
            flags & unit != 0
        }
        None => false,
    }
}

/// Writes a line to the server log without a callback context (a context-free log is
/// allowed by the API: it carries the module's name only when the server can tell).
pub fn log_line(level: &str, msg: &str) {
    Ctx(ptr::null_mut()).log(level, msg);
}

pub fn init_module(ctx: Ctx, name: &CStr, version: c_int) -> bool {
    // SAFETY: called once from OnLoad with the server's context; fills the API pointers.
    let ok = unsafe {
        raw::Export_RedisModule_Init(
            ctx.0,
            name.as_ptr(),
            version,
            raw::REDISMODULE_APIVER_1 as c_int,
        ) == raw::REDISMODULE_OK as c_int
    };
    if let (true, Some(set_options)) = (ok, api!(RedisModule_SetModuleOptions)) {
        // The module's own key opens (reads of what a command changed, the restore at
        // start-up) must not look like modifications to WATCH or client tracking.
        // SAFETY: live OnLoad ctx.
        unsafe {
            set_options(
                ctx.0,
                raw::REDISMODULE_OPTION_NO_IMPLICIT_SIGNAL_MODIFIED as c_int,
            )
        };
    }
    ok
}

/// The server's clock now, in ms (`mstime()`).
pub fn milliseconds() -> Option<i64> {
    let f = api!(RedisModule_Milliseconds)?;
    // SAFETY: takes no arguments.
    Some(unsafe { f() })
}

/// The server's cached time, in µs (Valkey 8, Redis 7.2+: what a command run from this
/// callback takes as its time).
pub fn cached_microseconds() -> Option<i64> {
    let f = api!(RedisModule_CachedMicroseconds)?;
    // SAFETY: takes no arguments.
    Some(unsafe { f() })
}

pub fn server_version() -> Option<(u32, u32, u32)> {
    let f = api!(RedisModule_GetServerVersion)?;
    // SAFETY: takes no arguments.
    let v = unsafe { f() } as u32;
    Some((v >> 16, (v >> 8) & 0xff, v & 0xff))
}

pub fn create_command(ctx: Ctx, name: &str, f: CommandFn, flags: &str) -> bool {
    create_keyed_command(ctx, name, f, flags, 0)
}

/// A module command whose key, if `key_at` is not 0, is its argument at that position
/// (for ACL key patterns and cluster routing).
pub fn create_keyed_command(
    ctx: Ctx,
    name: &str,
    f: CommandFn,
    flags: &str,
    key_at: c_int,
) -> bool {
    let (Ok(name), Ok(flags), Some(create)) = (
        CString::new(name),
        CString::new(flags),
        api!(RedisModule_CreateCommand),
    ) else {
        return false;
    };
    // SAFETY: live OnLoad ctx; the server copies name and flags.
    unsafe {
        create(
            ctx.0,
            name.as_ptr(),
            Some(f),
            flags.as_ptr(),
            key_at,
            key_at,
            key_at.min(1),
        ) == raw::REDISMODULE_OK as c_int
    }
}

/// Gives a module command ACL categories (`"admin dangerous"`): `None` where the server
/// cannot (Redis 7.0; Redis 7.4+ and Valkey 8 can), `Some(ok)` otherwise.
pub fn set_command_acl_categories(ctx: Ctx, name: &str, categories: &str) -> Option<bool> {
    let (get, set) = (
        api!(RedisModule_GetCommand)?,
        api!(RedisModule_SetCommandACLCategories)?,
    );
    let (name, categories) = (CString::new(name).ok()?, CString::new(categories).ok()?);
    // SAFETY: live OnLoad ctx; the command was created by this module.
    let cmd = unsafe { get(ctx.0, name.as_ptr()) };
    if cmd.is_null() {
        return Some(false);
    }
    // SAFETY: a live command handle; the server copies the string.
    Some(unsafe { set(cmd, categories.as_ptr()) } == raw::REDISMODULE_OK as c_int)
}

impl Ctx {
    /// Whether the calling client's ACL user may run `argv` (a native command that stands
    /// for a module command's power). When it may not, the denial goes to the ACL log
    /// under `as_command`'s name, as the server logs its own denials. True when the server
    /// cannot tell.
    pub fn caller_may_run(self, argv: &[&[u8]], as_command: &str) -> bool {
        let (Some(name_of), Some(user_of), Some(check), Some(free_user), Some(free)) = (
            api!(RedisModule_GetCurrentUserName),
            api!(RedisModule_GetModuleUserFromUserName),
            api!(RedisModule_ACLCheckCommandPermissions),
            api!(RedisModule_FreeModuleUser),
            api!(RedisModule_FreeString),
        ) else {
            return true;
        };
        // SAFETY: live command ctx; the name string is ours and freed below.
        let name = unsafe { name_of(self.0) };
        if name.is_null() {
            return true;
        }
        // SAFETY: a live user name; the user handle is freed below.
        let user = unsafe { user_of(name) };
        // SAFETY: the name string came from GetCurrentUserName, freed once.
        unsafe { free(self.0, name) };
        if user.is_null() {
            return true;
        }
        let owned: Vec<OwnedString> = argv
            .iter()
            .filter_map(|a| OwnedString::new(self, a))
            .collect();
        let mut ptrs: Vec<*mut RedisModuleString> = owned.iter().map(|s| s.ptr).collect();
        // SAFETY: a live user and `ptrs.len()` live argument strings.
        let allowed = unsafe { check(user, ptrs.as_mut_ptr(), ptrs.len() as c_int) }
            == raw::REDISMODULE_OK as c_int;
        if !allowed {
            if let (Some(log_entry), Some(object)) = (
                api!(RedisModule_ACLAddLogEntry),
                OwnedString::new(self, as_command.as_bytes()),
            ) {
                // SAFETY: live ctx, user and object string.
                unsafe {
                    log_entry(
                        self.0,
                        user,
                        object.ptr,
                        raw::RedisModuleACLLogEntryReason_REDISMODULE_ACL_LOG_CMD,
                    )
                };
            }
        }
        // SAFETY: the user handle came from GetModuleUserFromUserName, freed once.
        unsafe { free_user(user) };
        allowed
    }
}

pub type NotifyFn = unsafe extern "C" fn(
    *mut RedisModuleCtx,
    c_int,
    *const c_char,
    *mut RedisModuleString,
) -> c_int;

pub fn subscribe_keyspace(ctx: Ctx, types: c_int, f: NotifyFn) -> bool {
    let Some(sub) = api!(RedisModule_SubscribeToKeyspaceEvents) else {
        return false;
    };
    // SAFETY: live OnLoad ctx and a static callback.
    unsafe { sub(ctx.0, types, Some(f)) == raw::REDISMODULE_OK as c_int }
}

pub type FilterFn = unsafe extern "C" fn(*mut RedisModuleCommandFilterCtx);

pub fn register_filter(ctx: Ctx, f: FilterFn) -> bool {
    let Some(reg) = api!(RedisModule_RegisterCommandFilter) else {
        return false;
    };
    // SAFETY: live OnLoad ctx; NOSELF keeps the module's own RM_Calls out of the filter.
    !unsafe { reg(ctx.0, Some(f), raw::REDISMODULE_CMDFILTER_NOSELF as c_int) }.is_null()
}

pub type EventFn =
    unsafe extern "C" fn(*mut RedisModuleCtx, raw::RedisModuleEvent, u64, *mut c_void);

/// Subscribes to a server event by id (the header's event constants are `static const`
/// and not exported, so the event struct is built here).
pub fn subscribe_server_event(ctx: Ctx, id: u64, f: EventFn) -> bool {
    let Some(sub) = api!(RedisModule_SubscribeToServerEvent) else {
        return false;
    };
    let event = raw::RedisModuleEvent { id, dataver: 1 };
    // SAFETY: live OnLoad ctx and a static callback.
    unsafe { sub(ctx.0, event, Some(f)) == raw::REDISMODULE_OK as c_int }
}

/// The db number of a FLUSHDB event (-1 = all), from `RedisModuleFlushInfoV1`.
pub fn flush_info_db(data: *mut c_void) -> Option<i32> {
    if data.is_null() {
        return None;
    }
    #[repr(C)]
    struct FlushInfoV1 {
        version: u64,
        sync: i32,
        dbnum: i32,
    }
    // SAFETY: for REDISMODULE_EVENT_FLUSHDB the server passes a RedisModuleFlushInfoV1.
    Some(unsafe { (*(data as *const FlushInfoV1)).dbnum })
}

/// The two dbs of a SWAPDB event, from `RedisModuleSwapDbInfoV1`.
pub fn swap_info_dbs(data: *mut c_void) -> Option<(i32, i32)> {
    if data.is_null() {
        return None;
    }
    #[repr(C)]
    struct SwapDbInfoV1 {
        version: u64,
        first: i32,
        second: i32,
    }
    // SAFETY: for REDISMODULE_EVENT_SWAPDB the server passes a RedisModuleSwapDbInfoV1.
    let info = unsafe { &*(data as *const SwapDbInfoV1) };
    Some((info.first, info.second))
}

pub fn c_str<'a>(p: *const c_char) -> &'a [u8] {
    if p.is_null() {
        return &[];
    }
    // SAFETY: the server passes NUL-terminated event names valid for the callback.
    unsafe { CStr::from_ptr(p) }.to_bytes()
}

// ---- module configs ------------------------------------------------------------------

pub type GetStringFn = unsafe extern "C" fn(*const c_char, *mut c_void) -> *mut RedisModuleString;
pub type SetStringFn = unsafe extern "C" fn(
    *const c_char,
    *mut RedisModuleString,
    *mut c_void,
    *mut *mut RedisModuleString,
) -> c_int;
pub type GetNumericFn = unsafe extern "C" fn(*const c_char, *mut c_void) -> c_longlong;
pub type SetNumericFn = unsafe extern "C" fn(
    *const c_char,
    c_longlong,
    *mut c_void,
    *mut *mut RedisModuleString,
) -> c_int;

pub fn register_string_config(
    ctx: Ctx,
    name: &str,
    default: &str,
    flags: u32,
    get: GetStringFn,
    set: SetStringFn,
) -> bool {
    let (Ok(name), Ok(default), Some(reg)) = (
        CString::new(name),
        CString::new(default),
        api!(RedisModule_RegisterStringConfig),
    ) else {
        return false;
    };
    // SAFETY: live OnLoad ctx; the server copies name/default; callbacks are static.
    unsafe {
        reg(
            ctx.0,
            name.as_ptr(),
            default.as_ptr(),
            flags,
            Some(get),
            Some(set),
            None,
            ptr::null_mut(),
        ) == raw::REDISMODULE_OK as c_int
    }
}

#[allow(clippy::too_many_arguments)]
pub fn register_numeric_config(
    ctx: Ctx,
    name: &str,
    default: i64,
    flags: u32,
    min: i64,
    max: i64,
    get: GetNumericFn,
    set: SetNumericFn,
) -> bool {
    let (Ok(name), Some(reg)) = (CString::new(name), api!(RedisModule_RegisterNumericConfig))
    else {
        return false;
    };
    // SAFETY: live OnLoad ctx; callbacks are static.
    unsafe {
        reg(
            ctx.0,
            name.as_ptr(),
            default,
            flags,
            min,
            max,
            Some(get),
            Some(set),
            None,
            ptr::null_mut(),
        ) == raw::REDISMODULE_OK as c_int
    }
}

pub fn load_configs(ctx: Ctx) -> bool {
    match api!(RedisModule_LoadConfigs) {
        // SAFETY: live OnLoad ctx, after every config was registered.
        Some(f) => unsafe { f(ctx.0) == raw::REDISMODULE_OK as c_int },
        None => false,
    }
}

/// Creates a server string to hand back from a config getter (the server frees it).
pub fn new_config_string(value: &str) -> *mut RedisModuleString {
    match api!(RedisModule_CreateString) {
        // SAFETY: a context-less string; ownership passes to the server.
        Some(create) => unsafe {
            create(
                ptr::null_mut(),
                value.as_ptr() as *const c_char,
                value.len(),
            )
        },
        None => ptr::null_mut(),
    }
}

/// Writes an error message for a config setter to return.
pub fn set_config_error(err: *mut *mut RedisModuleString, msg: &str) {
    if !err.is_null() {
        // SAFETY: the server passes a valid out-pointer and takes ownership of the string.
        unsafe { *err = new_config_string(msg) };
    }
}

// ---- INFO ----------------------------------------------------------------------------

pub type InfoFn = unsafe extern "C" fn(*mut RedisModuleInfoCtx, c_int);

pub fn register_info(ctx: Ctx, f: InfoFn) -> bool {
    match api!(RedisModule_RegisterInfoFunc) {
        // SAFETY: live OnLoad ctx and a static callback.
        Some(reg) => unsafe { reg(ctx.0, Some(f)) == raw::REDISMODULE_OK as c_int },
        None => false,
    }
}

pub struct InfoCtx(pub *mut RedisModuleInfoCtx);

impl InfoCtx {
    pub fn section(&self) {
        if let Some(f) = api!(RedisModule_InfoAddSection) {
            // SAFETY: live info ctx; an empty name means the module's default section.
            unsafe { f(self.0, c"".as_ptr()) };
        }
    }

    pub fn field(&self, name: &str, value: &str) {
        let (Ok(name), Ok(value), Some(f)) = (
            CString::new(name),
            CString::new(value),
            api!(RedisModule_InfoAddFieldCString),
        ) else {
            return;
        };
        // SAFETY: live info ctx; both strings NUL-terminated, copied by the server.
        unsafe { f(self.0, name.as_ptr(), value.as_ptr()) };
    }
}

/// The module's detached context (see `make_detached_context`), as an address.
static DETACHED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Makes the module's detached thread-safe context (at load): a context for work from
/// the command filter, which has none. Used on the main thread only, never locked there.
pub fn make_detached_context(ctx: Ctx) -> bool {
    let Some(make) = api!(RedisModule_GetDetachedThreadSafeContext) else {
        return false;
    };
    // SAFETY: live load-time ctx; the detached context lives as long as the module.
    let detached = unsafe { make(ctx.0) };
    DETACHED.store(detached as usize, std::sync::atomic::Ordering::Release);
    !detached.is_null()
}

/// The detached context, once made.
pub fn detached_context() -> Option<Ctx> {
    match DETACHED.load(std::sync::atomic::Ordering::Acquire) {
        0 => None,
        p => Some(Ctx(p as *mut RedisModuleCtx)),
    }
}

/// Runs `callback` once after `ms` milliseconds (0: in the next event-loop iteration).
pub fn start_timer(
    ctx: Ctx,
    ms: i64,
    callback: unsafe extern "C" fn(*mut RedisModuleCtx, *mut c_void),
) -> bool {
    let Some(create) = api!(RedisModule_CreateTimer) else {
        return false;
    };
    // SAFETY: live ctx; the callback is a plain function without data.
    unsafe { create(ctx.0, ms, Some(callback), ptr::null_mut()) };
    true
}

/// The kernel's clock ticks per second (for /proc times).
pub fn clock_ticks_per_second() -> Option<f64> {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (ticks > 0).then_some(ticks as f64)
}

/// Runs `callback` on the main thread in the event loop's next pass: the module pipe
/// wakes the loop at once, and client events are served before it runs. (A timer would
/// wait at least 1 ms: module.c clamps a module timer's period to 1 ms.)
pub fn run_in_next_loop(callback: unsafe extern "C" fn(*mut c_void)) -> bool {
    let Some(add) = api!(RedisModule_EventLoopAddOneShot) else {
        return false;
    };
    // SAFETY: a plain function without data; the server calls it once on the main thread.
    unsafe { add(Some(callback), ptr::null_mut()) == raw::REDISMODULE_OK as c_int }
}
