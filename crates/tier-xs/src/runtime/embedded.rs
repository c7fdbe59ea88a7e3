//! The embedded backend's storage: one SQLite database in the data directory, with the
//! schema of every embedded runtime service.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::RuntimeError;

/// The database file inside a data directory.
pub const DB_FILE: &str = "agentbus.db";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS kv (
    tenant     TEXT NOT NULL,
    key        TEXT NOT NULL,
    value      TEXT NOT NULL,
    version    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER,
    PRIMARY KEY (tenant, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS events (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    detail_type TEXT NOT NULL,
    detail      TEXT NOT NULL,
    time_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS events_by_tenant_time ON events (tenant, time_ms);
CREATE TABLE IF NOT EXISTS secrets (
    tenant     TEXT NOT NULL,
    name       TEXT NOT NULL,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS deployments (
    at_ms  INTEGER PRIMARY KEY,
    record TEXT NOT NULL
);
"#;

/// The data directory and its database hold tenants' secrets and webhook signing keys: only
/// their owner may read them (0700 and 0600; SQLite gives its journal files the database's
/// mode).
fn owner_only(dir: &Path, db: &Path) -> Result<(), RuntimeError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let fail = |what: &Path, e: std::io::Error| RuntimeError::Backend {
            op: "protect data directory",
            message: format!("{}: {e}", what.display()),
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(dir, e))?;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(db)
            .map_err(|e| fail(db, e))?;
        std::fs::set_permissions(db, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(db, e))?;
    }
    #[cfg(not(unix))]
    let _ = (dir, db);
    Ok(())
}

/// Opens (creating if needed) the database in `data_dir` and brings its schema up to date.
pub async fn open(data_dir: &Path) -> Result<SqlitePool, RuntimeError> {
    std::fs::create_dir_all(data_dir).map_err(|e| RuntimeError::Backend {
        op: "create data directory",
        message: format!("{}: {e}", data_dir.display()),
    })?;
    let path = data_dir.join(DB_FILE);
    owner_only(data_dir, &path)?;
    let opts = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))
        .map_err(|e| RuntimeError::backend("open database", e))?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(5));
    let pool = SqlitePoolOptions::new()
        .max_connections(4)
        .connect_with(opts)
        .await
        .map_err(|e| RuntimeError::backend("open database", e))?;
    sqlx::raw_sql(SCHEMA)
        .execute(&pool)
        .await
        .map_err(|e| RuntimeError::backend("create schema", e))?;
    Ok(pool)
}

/// SQLite statements run on the calling thread, for the hot path (the KV store's).
///
/// The sqlx driver runs each connection on a thread of its own and hands every statement to it
/// and the answer back: two thread wake-ups per statement, which the MCP benchmark's profile
/// put at about a third of a `kv_get`'s server CPU. A point read or a one-statement write in
/// WAL mode takes microseconds, less than those hand-offs, so these run where they are called,
/// on idle connections kept here. Nothing waits on an async worker thread:
/// - this process's writes take turns; a statement that would still wait for the write lock
///   (another process, or the pool of [`open`], holds it) fails at once with SQLITE_BUSY,
///   and is run again on the blocking pool with the usual busy timeout;
/// - these connections never checkpoint when they commit (a checkpoint syncs the database
///   file); every [`CHECKPOINT_EVERY`] writes, one runs on the blocking pool instead.
///
/// Use after [`open`] has brought the schema up to date; the WAL journal mode it set is kept
/// in the file.
#[derive(Clone)]
pub struct Direct {
    inner: std::sync::Arc<DirectInner>,
}

struct DirectInner {
    path: std::path::PathBuf,
    idle: std::sync::Mutex<Vec<rusqlite::Connection>>,
    writes: std::sync::atomic::AtomicU64,
    /// This process's writes take turns (first come, first served) before they take SQLite's
    /// write lock: two that met there would send one to the busy timeout, whose sleeps run
    /// from 1 to 100 ms, and made the tail of concurrent writes 50 ms long.
    turns: tokio::sync::Mutex<()>,
}

/// Connections kept idle: one per statement running at once, and the server's runtime has a
/// worker thread per core.
const MAX_IDLE: usize = 8;

/// How long a statement waits for the write lock on the blocking pool (as [`open`]'s pool).
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Writes between two checkpoints of the WAL into the database (SQLite's own default is
/// 1,000 pages; a KV write is a page or a few).
pub const CHECKPOINT_EVERY: u64 = 1_000;

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

impl Direct {
    pub fn new(data_dir: &Path) -> Self {
        Direct {
            inner: std::sync::Arc::new(DirectInner {
                path: data_dir.join(DB_FILE),
                idle: std::sync::Mutex::new(Vec::new()),
                writes: std::sync::atomic::AtomicU64::new(0),
                turns: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn take(&self) -> rusqlite::Result<rusqlite::Connection> {
        let idle = self
            .inner
            .idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop();
        if let Some(c) = idle {
            return Ok(c);
        }
        use rusqlite::OpenFlags;
        let c = rusqlite::Connection::open_with_flags(
            &self.inner.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        c.busy_timeout(Duration::ZERO)?;
        c.pragma_update(None, "synchronous", "NORMAL")?;
        c.pragma_update(None, "wal_autocheckpoint", 0)?;
        Ok(c)
    }

    fn give(&self, c: rusqlite::Connection) {
        let mut idle = self.inner.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(c);
        }
    }

    /// Runs a read: `f` with a connection, here, or on the blocking pool if it would wait.
    pub async fn read<T, F>(&self, op: &'static str, f: F) -> Result<T, RuntimeError>
    where
        F: Fn(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let conn = self.take().map_err(|e| RuntimeError::backend(op, e))?;
        match f(&conn) {
            Err(e) if is_busy(&e) => self.waiting(op, conn, f).await,
            r => {
                self.give(conn);
                r.map_err(|e| RuntimeError::backend(op, e))
            }
        }
    }

    /// Runs a write as [`Self::read`] does a read, and counts it towards the next checkpoint.
    pub async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, RuntimeError>
    where
        F: Fn(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let r = {
            let _turn = self.inner.turns.lock().await;
            self.read(op, f).await
        };
        let n = self
            .inner
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if (n + 1).is_multiple_of(CHECKPOINT_EVERY) {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                let done = this.take().and_then(|c| {
                    let r = c.busy_timeout(BUSY_TIMEOUT).and_then(|()| {
                        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    });
                    let _ = c.busy_timeout(Duration::ZERO);
                    this.give(c);
                    r
                });
                if let Err(e) = done {
                    tracing::warn!("checkpoint of the embedded database: {e}");
                }
            });
        }
        r
    }

    /// `f` again on the blocking pool, where waiting for the write lock blocks no task.
    async fn waiting<T, F>(
        &self,
        op: &'static str,
        conn: rusqlite::Connection,
        f: F,
    ) -> Result<T, RuntimeError>
    where
        F: Fn(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let this = self.clone();
        tokio::task::spawn_blocking(move || {
            let r = conn.busy_timeout(BUSY_TIMEOUT).and_then(|()| f(&conn));
            if conn.busy_timeout(Duration::ZERO).is_ok() {
                this.give(conn);
            }
            r
        })
        .await
        .map_err(|e| RuntimeError::backend(op, e))?
        .map_err(|e| RuntimeError::backend(op, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[tokio::test]
    async fn only_the_owner_may_read_the_data_directory_and_its_database() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("agentbus-perm-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let pool = open(&dir).await.unwrap();
        sqlx::query(
            "INSERT INTO kv (tenant, key, value, version, updated_at) VALUES ('t', 'k', 'v', 1, 0)",
        )
        .execute(&pool)
        .await
        .ok();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(DB_FILE)), 0o600);
        for f in std::fs::read_dir(&dir).unwrap() {
            let f = f.unwrap().path();
            assert_eq!(mode(&f) & 0o077, 0, "{} is readable by others", f.display());
        }
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_direct_write_that_meets_the_write_lock_waits_for_it_off_the_async_threads() {
        let dir = std::env::temp_dir().join(format!("agentbus-direct-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pool = open(&dir).await.unwrap();
        let direct = Direct::new(&dir);
        // Another connection holds the write lock.
        let mut holder = pool.acquire().await.unwrap();
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut *holder)
            .await
            .unwrap();
        sqlx::query("INSERT INTO kv (tenant, key, value, version, updated_at) VALUES ('t', 'held', 'v', 1, 0)")
            .execute(&mut *holder)
            .await
            .unwrap();
        let write = tokio::spawn({
            let direct = direct.clone();
            async move {
                direct
                    .write("insert", |c| {
                        c.execute(
                            "INSERT INTO kv (tenant, key, value, version, updated_at) VALUES ('t', 'mine', 'v', 1, 0)",
                            [],
                        )
                    })
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!write.is_finished(), "the write gave up instead of waiting");
        // Reads go on meanwhile, on the async threads: they see what is committed.
        let seen = direct
            .read("count", |c| {
                c.query_row("SELECT COUNT(*) FROM kv", [], |r| r.get::<_, i64>(0))
            })
            .await
            .unwrap();
        assert_eq!(seen, 0);
        sqlx::query("COMMIT").execute(&mut *holder).await.unwrap();
        assert_eq!(write.await.unwrap().unwrap(), 1);
        let keys = direct
            .read("keys", |c| {
                c.prepare("SELECT key FROM kv ORDER BY key")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .unwrap();
        assert_eq!(keys, ["held", "mine"]);
        drop(holder);
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
