//! The Redis glue: module entry point, callbacks and their wiring.
//!
//! Data path (docs/design.md): the command filter records argv hints and refuses writes
//! the pool cannot take (before they execute); the command runs unchanged; its keyspace
//! notifications become effects appended durably to the log (`capture`); the reply can
//! leave only after that. At start-up the pool is restored in the first event-loop
//! iteration (`startup`).
//!
//! Every callback the server calls is wrapped in `guarded`: no panic crosses into the
//! server; a panic poisons the module (writes refused, reads served) and is logged.

mod append;
mod capture;
mod commands;
pub mod config;
mod ffi;
mod functions;
mod group_state;
pub mod hints;
mod rdb;
mod rdb_string;
mod reads;
mod replayer;
mod restore;
mod silent;
mod startup;
mod state;
mod stream_dump;
mod warmup;

use config::{Durability, Settings};
use ffi::{
    Ctx, Filter, InfoCtx, RedisModuleCommandFilterCtx, RedisModuleCtx, RedisModuleInfoCtx,
    RedisModuleString,
};
use hints::{hinted_name, HintTable, INDEXED_ARGS};
use once_cell::sync::Lazy;
use redis_module::raw;
use state::{with_module, Module, Refusal, ADMIT, CAPTURING, MODULE};
use std::ffi::{c_char, c_int, c_longlong, c_void};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::pool::{Pool, PoolOptions};

const OK: c_int = raw::REDISMODULE_OK as c_int;
const ERR: c_int = raw::REDISMODULE_ERR as c_int;

/// Settings as registered module configs see them (written by config setters at load).
static SETTINGS: Lazy<Mutex<Settings>> = Lazy::new(|| Mutex::new(Settings::default()));
/// Set once the first event-loop iteration ran start-up.
static STARTED: AtomicBool = AtomicBool::new(false);
/// Durability everysec is in effect (read on every event-loop iteration).
static EVERYSEC: AtomicBool = AtomicBool::new(false);

fn guarded<T>(ctx: Option<Ctx>, what: &str, default: T, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            let why = format!("internal error in {what}: {msg}");
            if let Some(ctx) = ctx {
                ctx.log(
                    "warning",
                    &format!("redis-nvm: {why}; writes are refused from now on"),
                );
            }
            with_module(|m| m.refuse(Refusal::Poisoned(why)));
            default
        }
    }
}

/// The module's entry point, called by `loadmodule`.
///
/// # Safety
/// Called by the server with a valid context and `argc` module arguments in `argv`.
#[no_mangle]
pub unsafe extern "C" fn RedisModule_OnLoad(
    ctx: *mut RedisModuleCtx,
    argv: *mut *mut RedisModuleString,
    argc: c_int,
) -> c_int {
    let ctx = Ctx(ctx);
    if !ffi::init_module(ctx, c"nvm", 1) {
        return ERR;
    }
    guarded(Some(ctx), "OnLoad", ERR, || on_load(ctx, argv, argc))
}

fn on_load(ctx: Ctx, argv: *mut *mut RedisModuleString, argc: c_int) -> c_int {
    let args = ffi::command_args(argv, argc);
    let settings = match Settings::from_args(&args) {
        Ok(s) => s,
        Err(e) => {
            ctx.log("warning", &format!("redis-nvm: {e}"));
            return ERR;
        }
    };
    *SETTINGS.lock().unwrap_or_else(|p| p.into_inner()) = settings.clone();
    if !register_configs(ctx, &settings) {
        ctx.log("warning", "redis-nvm: cannot register the nvm.* configs");
        return ERR;
    }
    if !ffi::load_configs(ctx) {
        ctx.log(
            "warning",
            "redis-nvm: an nvm.* value in the server's configuration is invalid (see above)",
        );
        return ERR;
    }
    let settings = SETTINGS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    warmup::set_slice_us(settings.warmup_slice_us);
    if let ffi::Reply::Array(kv) = ctx.call("CONFIG", &[b"GET", b"repl-diskless-load"]) {
        if kv.get(1).and_then(ffi::Reply::as_bytes) == Some(b"swapdb".as_slice()) {
            ctx.log("warning", &format!("redis-nvm: {SWAPDB_LOAD}"));
            return ERR;
        }
    }

    let options = PoolOptions {
        path: settings.path.clone(),
        // An existing pool grows to a size asked for, not to the default.
        size: if settings.size_given || !settings.path.exists() {
            settings.size
        } else {
            config::MIN_SIZE
        },
        log_size: settings.log_size,
        mode: settings.mode,
        emulate_flush_delay_ns: settings.emulate_flush_delay_ns,
    };
    let opened = std::time::Instant::now();
    let pool = match Pool::open_or_create(&options) {
        Ok(p) => p,
        Err(e) => {
            ctx.log("warning", &format!("redis-nvm: cannot open the pool: {e}"));
            return ERR;
        }
    };
    // O(1): the walk that verifies the key space and finds its free space runs in the
    // background once the server serves (see `warmup`).
    let keyspace = match pool.open_keyspace_unwalked() {
        Ok(k) => k,
        Err(e) => {
            ctx.log(
                "warning",
                &format!("redis-nvm: cannot open the pool's key space: {e} (inspect it with `nvm-tool check`)"),
            );
            return ERR;
        }
    };
    let replayer = match crate::replay::Replayer::new(keyspace, pool.log().new_reader()) {
        Ok(r) => r,
        Err(e) => {
            ctx.log(
                "warning",
                &format!("redis-nvm: cannot open the pool's key space: {e}"),
            );
            return ERR;
        }
    };
    match pool.info().grown_from {
        Some(0) => ctx.log(
            "notice",
            &format!("redis-nvm: finished a grow of the pool that a crash interrupted: {} bytes", pool.info().size),
        ),
        Some(from) => ctx.log(
            "notice",
            &format!("redis-nvm: pool grown from {from} to {} bytes (its data kept in place)", pool.info().size),
        ),
        None if settings.size_given && settings.size < pool.info().size => ctx.log(
            "warning",
            &format!(
                "redis-nvm: nvm.size {} is smaller than the pool's {} bytes: pools do not shrink; it keeps its size",
                settings.size,
                pool.info().size
            ),
        ),
        None => {}
    }
    replayer::publish_keyspace(&replayer);
    replayer::publish_durable(pool.log().committed_end());
    ctx.log(
        "notice",
        &format!(
            "redis-nvm: pool opened in {} ms (superblock, journal, log tail): {} keys; journal: {:?}",
            opened.elapsed().as_millis(),
            replayer::PUBLISHED.keys.load(Ordering::Relaxed),
            pool.info().journal,
        ),
    );
    *replayer::REPLAYER.lock().unwrap_or_else(|p| p.into_inner()) =
        Some(std::sync::Arc::new(std::sync::Mutex::new(replayer)));
    let server = match ffi::server_version() {
        Some((a, b, c)) => format!("{a}.{b}.{c}"),
        None => "unknown".into(),
    };
    {
        let info = pool.info();
        ctx.log(
            "notice",
            &format!(
                "redis-nvm {}: pool {} ({}, {} bytes, uuid {}); mode {}: {}; durability {}; {} log records to restore",
                env!("CARGO_PKG_VERSION"),
                info.path.display(),
                if info.created { "created now" } else { "existing" },
                info.size,
                info.uuid,
                info.mode,
                info.mode_reason,
                settings.durability.as_str(),
                pool.log().record_count(),
            ),
        );
        if matches!(info.mode, crate::pmem::MediaMode::Emulate { .. }) {
            ctx.log(
                "warning",
                "redis-nvm: EMULATION MODE: the pool file is treated as persistent memory but is NOT: \
                 a power loss loses it. For development and benchmarks only",
            );
        }
        if let crate::log::LogState::Corrupt(c) = pool.log().state() {
            ctx.log(
                "warning",
                &format!("redis-nvm: the pool's log is damaged: {c}"),
            );
        }
    }
    EVERYSEC.store(
        settings.durability == Durability::Everysec,
        Ordering::SeqCst,
    );
    *MODULE.lock().unwrap_or_else(|p| p.into_inner()) = Some(Module::new(pool, settings, server));
    with_module(|m| m.stats.pool_open_ms = opened.elapsed().as_millis() as u64);

    // NVM.INFO is allow-busy so that it answers (with the progress) during a long restore.
    let registered = ffi::create_command(
        ctx,
        "nvm.info",
        cmd_info,
        "readonly fast allow-loading allow-stale allow-busy",
    ) && ffi::create_command(
        ctx,
        "nvm.help",
        cmd_help,
        "readonly fast allow-loading allow-stale",
    ) && ffi::create_command(
        ctx,
        "nvm.check",
        cmd_check,
        "readonly allow-loading allow-stale",
    ) && ffi::create_command(
        ctx,
        "nvm.repair",
        cmd_repair,
        "admin allow-loading allow-stale",
    ) && ffi::create_command(
        ctx,
        "nvm.refused",
        cmd_refused,
        "fast allow-loading allow-stale",
    ) && ffi::create_keyed_command(ctx, "nvm.get", cmd_get, READ_FLAGS, 1)
        && ffi::create_keyed_command(ctx, "nvm.type", cmd_type, READ_FLAGS_FAST, 1)
        && ffi::create_keyed_command(ctx, "nvm.ttl", cmd_ttl, READ_FLAGS_FAST, 1)
        && ffi::create_keyed_command(ctx, "nvm.pttl", cmd_pttl, READ_FLAGS_FAST, 1)
        && ffi::create_command(ctx, "nvm.dbsize", cmd_dbsize, READ_FLAGS_FAST)
        && ffi::create_command(ctx, "nvm.scan", cmd_scan, READ_FLAGS)
        && ffi::register_filter(ctx, on_filter)
        && ffi::subscribe_keyspace(
            ctx,
            raw::REDISMODULE_NOTIFY_ALL | raw::REDISMODULE_NOTIFY_LOADED,
            on_keyspace,
        )
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_EVENTLOOP, on_server_event)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_FLUSHDB, on_server_event)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_SWAPDB, on_server_event)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_LOADING, on_server_event)
        && ffi::subscribe_server_event(ctx, raw::REDISMODULE_EVENT_SHUTDOWN, on_server_event)
        && ffi::register_info(ctx, on_info)
        && ffi::make_detached_context(ctx);
    if registered {
        let by_server = commands::ACL_CATEGORIES.iter().all(|(name, categories)| {
            ffi::set_command_acl_categories(ctx, name, categories) == Some(true)
        });
        commands::ACL_BY_SERVER.store(by_server, Ordering::SeqCst);
    }
    if !registered {
        ctx.log("warning", "redis-nvm: this server lacks a module API the module needs (commands, filters, events)");
        *MODULE.lock().unwrap_or_else(|p| p.into_inner()) = None;
        return ERR;
    }
    OK
}

// ---- configs -------------------------------------------------------------------------

fn register_configs(ctx: Ctx, s: &Settings) -> bool {
    // Registered mutable so that CONFIG SET of the current value succeeds, as for the
    // server's own configs; the setter refuses a different value of what cannot change
    // while the server runs (`Settings::change_at_run_time`).
    let fixed = raw::REDISMODULE_CONFIG_DEFAULT;
    ffi::register_string_config(
        ctx,
        "path",
        &s.path.display().to_string(),
        fixed,
        get_string,
        set_string,
    ) && ffi::register_string_config(
        ctx,
        "mode",
        &s.mode.to_string(),
        fixed,
        get_string,
        set_string,
    ) && ffi::register_string_config(
        ctx,
        "durability",
        s.durability.as_str(),
        fixed,
        get_string,
        set_string,
    ) && ffi::register_string_config(
        ctx,
        "fill-warnings",
        &config::fill_warnings_text(&s.fill_warnings),
        fixed,
        get_string,
        set_string,
    ) && ffi::register_numeric_config(
        ctx,
        "size",
        i64::try_from(s.size).unwrap_or(i64::MAX),
        fixed | raw::REDISMODULE_CONFIG_MEMORY,
        config::MIN_SIZE as i64,
        i64::MAX,
        get_numeric,
        set_numeric,
    ) && ffi::register_numeric_config(
        ctx,
        "log-size",
        i64::try_from(s.log_size).unwrap_or(i64::MAX),
        fixed | raw::REDISMODULE_CONFIG_MEMORY,
        config::MIN_LOG_SIZE as i64,
        i64::MAX,
        get_numeric,
        set_numeric,
    ) && ffi::register_numeric_config(
        ctx,
        "emulate-flush-delay-ns",
        s.emulate_flush_delay_ns as i64,
        fixed,
        0,
        1_000_000,
        get_numeric,
        set_numeric,
    ) && ffi::register_numeric_config(
        ctx,
        "warmup-slice-us",
        s.warmup_slice_us as i64,
        fixed,
        *config::WARMUP_SLICE_US.start() as i64,
        *config::WARMUP_SLICE_US.end() as i64,
        get_numeric,
        set_numeric,
    )
}

fn config_name(name: *const c_char) -> String {
    let raw_name = String::from_utf8_lossy(ffi::c_str(name)).to_ascii_lowercase();
    raw_name
        .strip_prefix("nvm.")
        .unwrap_or(&raw_name)
        .to_string()
}

unsafe extern "C" fn get_string(
    name: *const c_char,
    _privdata: *mut c_void,
) -> *mut RedisModuleString {
    guarded(None, "config get", std::ptr::null_mut(), || {
        let s = SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
        let value = match config_name(name).as_str() {
            "path" => s.path.display().to_string(),
            "mode" => s.mode.to_string(),
            "durability" => s.durability.as_str().to_string(),
            "fill-warnings" => config::fill_warnings_text(&s.fill_warnings),
            _ => String::new(),
        };
        ffi::new_config_string(&value)
    })
}

unsafe extern "C" fn set_string(
    name: *const c_char,
    val: *mut RedisModuleString,
    _privdata: *mut c_void,
    err: *mut *mut RedisModuleString,
) -> c_int {
    guarded(None, "config set", ERR, || {
        let value = String::from_utf8_lossy(ffi::string_bytes(val)).into_owned();
        match set_config(&config_name(name), &value) {
            Ok(()) => OK,
            Err(e) => {
                ffi::set_config_error(err, &e);
                ERR
            }
        }
    })
}

unsafe extern "C" fn get_numeric(name: *const c_char, _privdata: *mut c_void) -> c_longlong {
    guarded(None, "config get", 0, || {
        let s = SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
        match config_name(name).as_str() {
            "size" => i64::try_from(s.size).unwrap_or(i64::MAX),
            "log-size" => i64::try_from(s.log_size).unwrap_or(i64::MAX),
            "emulate-flush-delay-ns" => s.emulate_flush_delay_ns as i64,
            "warmup-slice-us" => s.warmup_slice_us as i64,
            _ => 0,
        }
    })
}

unsafe extern "C" fn set_numeric(
    name: *const c_char,
    val: c_longlong,
    _privdata: *mut c_void,
    err: *mut *mut RedisModuleString,
) -> c_int {
    guarded(None, "config set", ERR, || {
        match set_config(&config_name(name), &val.to_string()) {
            Ok(()) => OK,
            Err(e) => {
                ffi::set_config_error(err, &e);
                ERR
            }
        }
    })
}

/// A config's new value: while loading, whatever the server's configuration says; once
/// running, what can change changes at once (durability, the emulated flush delay, the
/// warm-up slice), and the rest accepts only its current value.
fn set_config(name: &str, value: &str) -> Result<(), String> {
    let loaded = with_module(|_| ()).is_some();
    let mut settings = SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
    if !loaded {
        // The server sets every config not in its configuration to its default through
        // this callback too (module.c, loadModuleConfigs): the default size is no request
        // to grow an existing pool.
        let was_given = settings.size_given;
        settings.set(name, value)?;
        if name == "size" && !was_given && settings.size == config::DEFAULT_SIZE {
            settings.size_given = false;
        }
        return Ok(());
    }
    let mut wanted = settings.clone();
    wanted.set(name, value)?;
    if name == "size" && wanted.size != settings.size {
        // The pool grows online to a larger size; it never shrinks.
        let size = wanted.size;
        with_module(|m| {
            let current = m.pool.info().size;
            match size.cmp(&current) {
                std::cmp::Ordering::Greater => m.grow(size),
                std::cmp::Ordering::Less => Err(format!(
                    "nvm.size {size} is smaller than the pool's {current} bytes: pools do not shrink"
                )),
                std::cmp::Ordering::Equal => Ok(()),
            }
        })
        .unwrap_or(Ok(()))?;
        settings.size = size;
        return Ok(());
    }
    settings.change_at_run_time(&wanted)?;
    if wanted.durability != settings.durability {
        // Deferred records become durable before writes stop being deferred.
        with_module(|m| {
            m.sync_if_due(true);
            m.settings.durability = wanted.durability;
        });
        EVERYSEC.store(wanted.durability == Durability::Everysec, Ordering::SeqCst);
    }
    if wanted.emulate_flush_delay_ns != settings.emulate_flush_delay_ns {
        with_module(|m| {
            m.pool
                .media()
                .set_emulated_delay_ns(wanted.emulate_flush_delay_ns);
            m.settings.emulate_flush_delay_ns = wanted.emulate_flush_delay_ns;
        });
    }
    warmup::set_slice_us(wanted.warmup_slice_us);
    with_module(|m| m.settings.fill_warnings = wanted.fill_warnings.clone());
    *settings = wanted;
    Ok(())
}

// ---- commands ------------------------------------------------------------------------

/// Flags of the NVM key space's read commands: served while loading (they read the pool,
/// not DRAM) and on a stale replica.
const READ_FLAGS: &str = "readonly allow-loading allow-stale";
const READ_FLAGS_FAST: &str = "readonly fast allow-loading allow-stale";

/// Declares the server-facing callback of a module command: `$body(ctx)`, guarded.
macro_rules! command_callback {
    ($name:ident, $what:literal, $body:path) => {
        unsafe extern "C" fn $name(
            ctx: *mut RedisModuleCtx,
            _argv: *mut *mut RedisModuleString,
            _argc: c_int,
        ) -> c_int {
            let ctx = Ctx(ctx);
            guarded(Some(ctx), $what, OK, || {
                $body(ctx);
                OK
            })
        }
    };
    // The body also takes the arguments after the command name.
    ($name:ident, $what:literal, $body:path, with_args) => {
        unsafe extern "C" fn $name(
            ctx: *mut RedisModuleCtx,
            argv: *mut *mut RedisModuleString,
            argc: c_int,
        ) -> c_int {
            let ctx = Ctx(ctx);
            let args = ffi::args(argv, argc);
            guarded(Some(ctx), $what, OK, || {
                $body(ctx, args.get(1..).unwrap_or(&[]));
                OK
            })
        }
    };
}

command_callback!(cmd_info, "NVM.INFO", commands::nvm_info);
command_callback!(cmd_help, "NVM.HELP", commands::nvm_help);
command_callback!(cmd_check, "NVM.CHECK", commands::nvm_check, with_args);
command_callback!(cmd_repair, "NVM.REPAIR", commands::nvm_repair, with_args);
command_callback!(cmd_refused, "refusal", commands::nvm_refused, with_args);
command_callback!(cmd_get, "NVM.GET", reads::nvm_get, with_args);
command_callback!(cmd_type, "NVM.TYPE", reads::nvm_type, with_args);
command_callback!(cmd_ttl, "NVM.TTL", reads::nvm_ttl, with_args);
command_callback!(cmd_pttl, "NVM.PTTL", reads::nvm_pttl, with_args);
command_callback!(cmd_dbsize, "NVM.DBSIZE", reads::nvm_dbsize, with_args);
command_callback!(cmd_scan, "NVM.SCAN", reads::nvm_scan, with_args);

unsafe extern "C" fn on_info(ictx: *mut RedisModuleInfoCtx, _for_crash_report: c_int) {
    guarded(None, "INFO", (), || commands::info_section(InfoCtx(ictx)))
}

// ---- the data path -------------------------------------------------------------------

/// Runs before every command (client, script, master): admission, then the argv hint.
unsafe extern "C" fn on_filter(fctx: *mut RedisModuleCommandFilterCtx) {
    guarded(None, "command filter", (), || {
        let f = Filter(fctx);
        if f.is_empty() {
            return;
        }
        silent::note_any_command(f.arg(0));
        if !CAPTURING.load(Ordering::Relaxed) {
            return;
        }
        let name = f.arg(0);
        if !ADMIT.load(Ordering::Relaxed)
            && is_write(&f, name)
            && !finishing_a_unit()
            && !admitted_though_full(&f, name)
        {
            refuse(&f, None);
            return;
        }
        if !ADMIT.load(Ordering::Relaxed) && is_write(&f, name) && !frees_space(name) {
            // Admitted by a full key space's tier: it must also fit one free block
            // (what frees space allocates nothing: `keyspace::blocks::keep_if_full`).
            let largest_arg = (1..f.len()).map(|i| f.arg(i).len() as u64).max();
            if let Some(why) =
                with_module(|m| m.refusal_for_block(largest_arg.unwrap_or(0))).flatten()
            {
                refuse(&f, Some(why));
                return;
            }
        }
        if sets_swapdb_load(&f, name) {
            refuse(&f, Some(format!("ERR {SWAPDB_LOAD}")));
            return;
        }
        if warmup::ACTIVE.load(Ordering::Relaxed) {
            if let Some(why) = warmup::refusal_for(&f, name) {
                refuse(&f, Some(why));
                return;
            }
            warmup::fault_in(&f);
        }
        let arg_bytes = argument_bytes(&f);
        if arg_bytes > BIG_WRITE && is_write(&f, name) {
            if let Some(why) = with_module(|m| m.refusal_for_need(arg_bytes)).flatten() {
                refuse(&f, Some(why));
                return;
            }
        }
        silent::note_command(
            name,
            || (1..f.len()).map(|i| f.arg(i)).collect(),
            || f.client(),
        );
        functions::note_command(name, (f.len() > 1).then(|| f.arg(1)), || {
            f.client_in_multi()
        });
        let mut objects = [0usize; INDEXED_ARGS];
        let indexed = f.len().saturating_sub(1).min(INDEXED_ARGS);
        for (i, slot) in objects.iter_mut().take(indexed).enumerate() {
            *slot = f.arg_object(i + 1);
        }
        let objects = &objects[..indexed];
        let command = hinted_name(name).filter(|c| hints::worth_keeping(c, arg_bytes));
        let args = (1..f.len()).map(|i| f.arg(i));
        HintTable::with(|t| t.on_command(objects, command, args));
    })
}

/// Why `repl-diskless-load swapdb` is refused (at load and by CONFIG SET).
const SWAPDB_LOAD: &str = "repl-diskless-load swapdb is not supported with redis-nvm: a replica \
    would load its master's data into a temporary db the module cannot see, then swap it in; \
    use repl-diskless-load disabled or on-empty-db";

/// `CONFIG SET ... repl-diskless-load swapdb ...`.
fn sets_swapdb_load(f: &Filter, name: &[u8]) -> bool {
    if !name.eq_ignore_ascii_case(b"config")
        || f.len() < 4
        || !f.arg(1).eq_ignore_ascii_case(b"set")
    {
        return false;
    }
    (2..f.len() - 1).step_by(2).any(|i| {
        f.arg(i).eq_ignore_ascii_case(b"repl-diskless-load")
            && f.arg(i + 1).eq_ignore_ascii_case(b"swapdb")
    })
}

/// A write inside a running script or EXEC is part of a unit that has started: it is not
/// refused for a full log backlog, which the replayer drains (its append waits for it),
/// as stock Redis lets a script that has written go past `maxmemory`. A key space at its
/// reserve still refuses it: the script gets the error, as when the server refuses a
/// write inside a script; the reserve is for what EXEC, whose queued commands the filter
/// does not see again, may still need.
fn finishing_a_unit() -> bool {
    ffi::inside_script_or_exec()
        && with_module(|m| matches!(m.refusal, Some(Refusal::Full { .. }))).unwrap_or(false)
}

/// Whether a write runs although the key space is full: as the server does at
/// `maxmemory`, only what may grow the data (`denyoom`) is refused while the heap is
/// below its reserve; below a quarter of it, only what frees space runs.
fn admitted_though_full(f: &Filter, name: &[u8]) -> bool {
    match state::FULL_ADMITS.load(Ordering::Relaxed) {
        state::FULL_ADMITS_NON_GROWING => {
            !startup::may_grow_data(name, f.len().gt(&1).then(|| f.arg(1)))
        }
        state::FULL_ADMITS_FREEING => frees_space(name),
        _ => false,
    }
}

/// Writes whose effects only free key-space blocks (deletes, expiry, field removals and
/// pops: the key space applies them without allocating, see `keyspace::blocks::keep_if_full`).
fn frees_space(name: &[u8]) -> bool {
    const FREEING: &[&[u8]] = &[
        b"del",
        b"unlink",
        b"flushdb",
        b"flushall",
        b"getdel",
        b"expire",
        b"pexpire",
        b"expireat",
        b"pexpireat",
        b"lpop",
        b"rpop",
        b"ltrim",
        b"hdel",
        b"srem",
        b"zrem",
    ];
    FREEING.iter().any(|n| name.eq_ignore_ascii_case(n))
}

/// Writes whose arguments total more than this are checked against the pool's free
/// space before they run (smaller ones fit the reserve every admitted write finds).
const BIG_WRITE: u64 = 64 << 10;

/// The bytes of a command's arguments (what a write of it may log, at most, beyond a
/// constant; derived values are bounded by the reserve instead).
fn argument_bytes(f: &Filter) -> u64 {
    (1..f.len()).map(|i| f.arg(i).len() as u64).sum()
}

/// Turns the command into a refusal that never runs: `NVM.REFUSED` replying `why` (or
/// the module's refusal). A command being queued in MULTI becomes an unknown command
/// instead, which the server rejects at once and which makes EXEC abort the whole
/// transaction (`-EXECABORT`), as it does for a write refused at `maxmemory`; that takes a
/// server whose filters know the client (Redis 7.2+, Valkey 8). On Redis 7.0 the refused
/// write is queued as NVM.REFUSED and fails inside EXEC's reply.
fn refuse(f: &Filter, why: Option<String>) {
    if f.client_in_multi() == Some(true) {
        f.replace_all(&[REFUSED_IN_MULTI.as_bytes()]);
        return;
    }
    match why {
        Some(why) => f.replace_all(&[b"nvm.refused", why.as_bytes()]),
        None => f.replace_all(&[b"nvm.refused"]),
    }
}

/// The "command" a refused write queued in MULTI becomes (the server quotes it back in
/// its unknown-command error, up to 128 characters).
const REFUSED_IN_MULTI: &str =
    "NVMFULL(the NVM pool refused this write; EXEC will abort the transaction; see NVM.INFO)";

/// Whether a command must be refused while the pool cannot take writes: it writes a key
/// (per the server's key specs), or it is one of the keyless writes. Scripts are not:
/// each write they make passes the filter on its own.
fn is_write(f: &Filter, name: &[u8]) -> bool {
    const KEYLESS_WRITES: &[&[u8]] = &[b"flushall", b"flushdb", b"swapdb"];
    const SCRIPTS: &[&[u8]] = &[
        b"eval",
        b"evalsha",
        b"eval_ro",
        b"evalsha_ro",
        b"fcall",
        b"fcall_ro",
    ];
    let is = |names: &[&[u8]]| names.iter().any(|n| name.eq_ignore_ascii_case(n));
    if is(SCRIPTS) {
        return false;
    }
    // Redis 7.0 reports key flags only for commands with their own key-finding
    // procedure (SET has one, HSET does not), so the command table's `write` flag,
    // read at start-up, decides first.
    is(KEYLESS_WRITES)
        || startup::is_write_command(name, f.len().gt(&1).then(|| f.arg(1)))
        || f.writes_a_key()
}

unsafe extern "C" fn on_keyspace(
    ctx: *mut RedisModuleCtx,
    _type: c_int,
    event: *const c_char,
    key: *mut RedisModuleString,
) -> c_int {
    if !CAPTURING.load(Ordering::Relaxed) {
        return OK;
    }
    let ctx = Ctx(ctx);
    guarded(Some(ctx), "keyspace notification", OK, || {
        capture::on_keyspace_event(ctx, ffi::c_str(event), key as usize, ffi::string_bytes(key));
        OK
    })
}

/// The channel on which fill warnings are published (a monitoring client SUBSCRIBEs).
pub const FILL_CHANNEL: &str = "__redis-nvm__:fill";

/// Logs, and publishes on `FILL_CHANNEL`, the key space's fill crossing a
/// `fill-warnings` level (see `Module::fill_notice`).
fn announce_fill(ctx: Ctx) {
    if let Some((level, message)) = with_module(|m| m.fill_notice()).flatten() {
        ctx.log(level, &message);
        ctx.publish(FILL_CHANNEL, message.trim_start_matches("redis-nvm: "));
    }
}

unsafe extern "C" fn on_server_event(
    ctx: *mut RedisModuleCtx,
    event: raw::RedisModuleEvent,
    sub: u64,
    data: *mut c_void,
) {
    let ctx = Ctx(ctx);
    guarded(Some(ctx), "server event", (), || match event.id {
        raw::REDISMODULE_EVENT_EVENTLOOP
            if sub == raw::REDISMODULE_SUBEVENT_EVENTLOOP_BEFORE_SLEEP =>
        {
            if !STARTED.swap(true, Ordering::SeqCst) {
                startup::run(ctx);
                warmup::before_sleep();
            } else {
                let databases = with_module(|m| m.databases).unwrap_or(16);
                for (db, acks) in silent::before_sleep(ctx, databases) {
                    with_module(|m| m.append(db, &acks));
                }
                if capture::has_deferred() {
                    capture::log_deferred(ctx, databases);
                }
                functions::log_if_changed(ctx);
                warmup::before_sleep();
                if EVERYSEC.load(Ordering::Relaxed) {
                    with_module(|m| m.sync_if_due(false));
                }
                // The log learns what the replayer folded (its space is free again), and a
                // full backlog re-opens as soon as the replayer has caught up.
                if state::ADMIT.load(Ordering::Relaxed) {
                    with_module(|m| m.pool.log_mut().advance_head(replayer::applied()));
                } else {
                    with_module(|m| m.update_admission());
                }
                announce_fill(ctx);
            }
        }
        raw::REDISMODULE_EVENT_FLUSHDB if sub == raw::REDISMODULE_SUBEVENT_FLUSHDB_END => {
            if !CAPTURING.load(Ordering::Relaxed) {
                return;
            }
            // A negative db is FLUSHALL.
            if let Some(db) = ffi::flush_info_db(data) {
                warmup::on_flush(u32::try_from(db).ok());
                let (db, effect) = match u32::try_from(db) {
                    Ok(db) => (db, crate::effect::Effect::FlushDb),
                    Err(_) => (0, crate::effect::Effect::FlushAll),
                };
                with_module(|m| m.append(db, &[effect]));
            }
        }
        raw::REDISMODULE_EVENT_LOADING if sub == raw::REDISMODULE_SUBEVENT_LOADING_ENDED => {
            functions::note_load_ended();
        }
        raw::REDISMODULE_EVENT_SHUTDOWN => {
            with_module(|m| m.sync_if_due(true));
            replayer::stop();
        }
        raw::REDISMODULE_EVENT_SWAPDB => {
            if !CAPTURING.load(Ordering::Relaxed) {
                return;
            }
            if let Some((a, b)) = ffi::swap_info_dbs(data) {
                if let (Ok(a), Ok(b)) = (u32::try_from(a), u32::try_from(b)) {
                    silent::note_swapdb();
                    warmup::on_swap(a, b);
                    with_module(|m| m.append(a, &[crate::effect::Effect::SwapDb { other: b }]));
                }
            }
        }
        _ => {}
    })
}
