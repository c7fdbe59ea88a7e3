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
/// - this process's writes queue up and are committed together by whoever has the turn (a
///   group commit: one transaction, and its locks and WAL writes, for all of them); a batch
///   that would still wait for the write lock (another process, or the pool of [`open`],
///   holds it) fails at once with SQLITE_BUSY, and is run again on the blocking pool with
///   the usual busy timeout;
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
    /// Writes waiting for the next commit, in the order they came: whoever has the turn
    /// commits all of them in one transaction (a group commit).
    queue: std::sync::Mutex<Vec<(u64, Box<dyn Write>)>>,
    /// The next queued write's number.
    next: std::sync::atomic::AtomicU64,
}

/// A write waiting in the queue, and then its outcome until its transaction commits.
trait Write: Send {
    /// Runs the write (in a savepoint of the batch's transaction when `in_batch`) and keeps
    /// its outcome; true when it found the write lock taken.
    fn run(&mut self, c: &rusqlite::Connection, in_batch: bool) -> bool;
    /// Answers the writer: its outcome if the transaction committed, else why not.
    fn finish(self: Box<Self>, committed: Result<(), &rusqlite::Error>);
}

struct Pending<T, F> {
    op: &'static str,
    f: F,
    outcome: Option<rusqlite::Result<T>>,
    answer: tokio::sync::oneshot::Sender<Result<T, RuntimeError>>,
}

impl<T, F> Write for Pending<T, F>
where
    F: Fn(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
    T: Send + 'static,
{
    fn run(&mut self, c: &rusqlite::Connection, in_batch: bool) -> bool {
        let r = if in_batch {
            savepoint(c, &self.f)
        } else {
            (self.f)(c)
        };
        let busy = matches!(&r, Err(e) if is_busy(e));
        self.outcome = Some(r);
        busy
    }

    fn finish(self: Box<Self>, committed: Result<(), &rusqlite::Error>) {
        let op = self.op;
        let answer = match (self.outcome, committed) {
            (Some(Err(e)), _) => Err(RuntimeError::backend(op, e)),
            (_, Err(e)) => Err(RuntimeError::backend(op, e)),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (None, Ok(())) => Err(RuntimeError::Backend {
                op,
                message: "the write did not run".into(),
            }),
        };
        // A writer that went away no longer waits for its answer.
        let _ = self.answer.send(answer);
    }
}

/// `f` in a savepoint: a write that fails leaves nothing behind, and the others of its
/// batch go on.
fn savepoint<T>(
    c: &rusqlite::Connection,
    f: &dyn Fn(&rusqlite::Connection) -> rusqlite::Result<T>,
) -> rusqlite::Result<T> {
    c.prepare_cached("SAVEPOINT w")?.execute([])?;
    let r = f(c);
    if r.is_err() {
        c.prepare_cached("ROLLBACK TO w")?.execute([])?;
    }
    c.prepare_cached("RELEASE w")?.execute([])?;
    r
}

/// What became of a batch of writes.
enum Applied {
    /// It committed, or failed as a whole (the error).
    Done(rusqlite::Result<()>),
    /// The write lock was taken elsewhere before anything was written.
    Busy,
}

/// Runs `writes` as one transaction on `c`; a single write runs alone, as SQLite runs one
/// statement.
fn apply(c: &rusqlite::Connection, writes: &mut [(u64, Box<dyn Write>)]) -> Applied {
    if let [(_, w)] = writes {
        return match w.run(c, false) {
            true => Applied::Busy,
            false => Applied::Done(Ok(())),
        };
    }
    match c.execute_batch("BEGIN IMMEDIATE") {
        Err(e) if is_busy(&e) => return Applied::Busy,
        Err(e) => return Applied::Done(Err(e)),
        Ok(()) => {}
    }
    for (_, w) in writes.iter_mut() {
        w.run(c, true);
    }
    match c.execute_batch("COMMIT") {
        Ok(()) => Applied::Done(Ok(())),
        Err(e) => {
            let _ = c.execute_batch("ROLLBACK");
            Applied::Done(Err(e))
        }
    }
}

/// Takes a queued write out of the queue if its writer goes away before a batch took it: a
/// write whose caller stopped waiting before it ran does not happen later. Once its writer
/// has the turn, a batch has taken it (this one, or an earlier one), and the guard is
/// forgotten.
struct Queued<'a> {
    inner: &'a DirectInner,
    id: u64,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        let mut queue = self.inner.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.retain(|(id, _)| *id != self.id);
    }
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

/// Answers every write of a batch.
fn finish(batch: Vec<(u64, Box<dyn Write>)>, committed: Result<(), &rusqlite::Error>) {
    for (_, w) in batch {
        w.finish(committed);
    }
}

impl Direct {
    pub fn new(data_dir: &Path) -> Self {
        Direct {
            inner: std::sync::Arc::new(DirectInner {
                path: data_dir.join(DB_FILE),
                idle: std::sync::Mutex::new(Vec::new()),
                writes: std::sync::atomic::AtomicU64::new(0),
                turns: tokio::sync::Mutex::new(()),
                queue: std::sync::Mutex::new(Vec::new()),
                next: std::sync::atomic::AtomicU64::new(0),
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

    /// Runs a write: queued, then committed by whoever has the turn with every write queued
    /// by then, in one transaction (each in a savepoint of its own), here, or on the blocking
    /// pool if the write lock is taken elsewhere. Answers once the transaction committed, and
    /// counts the write towards the next checkpoint.
    pub async fn write<T, F>(&self, op: &'static str, f: F) -> Result<T, RuntimeError>
    where
        F: Fn(&rusqlite::Connection) -> rusqlite::Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let id = self
            .inner
            .next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pending = Pending {
            op,
            f,
            outcome: None,
            answer,
        };
        self.inner
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((id, Box::new(pending)));
        let queued = Queued {
            inner: &self.inner,
            id,
        };
        {
            let _turn = self.inner.turns.lock().await;
            let batch =
                std::mem::take(&mut *self.inner.queue.lock().unwrap_or_else(|p| p.into_inner()));
            std::mem::forget(queued);
            if !batch.is_empty() {
                self.commit(batch).await;
            }
        }
        let n = self
            .inner
            .writes
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if (n + 1).is_multiple_of(CHECKPOINT_EVERY) {
            let this = self.clone();
            tokio::task::spawn_blocking(move || {
                let done = this.take().and_then(|c| {
                    this.patiently(c, |c| {
                        c.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    })
                });
                if let Err(e) = done {
                    tracing::warn!("checkpoint of the embedded database: {e}");
                }
            });
        }
        answered.await.map_err(|e| RuntimeError::backend(op, e))?
    }

    /// Commits a batch of queued writes and answers each.
    async fn commit(&self, mut batch: Vec<(u64, Box<dyn Write>)>) {
        let conn = match self.take() {
            Ok(c) => c,
            Err(e) => return finish(batch, Err(&e)),
        };
        match apply(&conn, &mut batch) {
            Applied::Done(committed) => {
                if conn.is_autocommit() {
                    self.give(conn);
                }
                finish(batch, committed.as_ref().map(|_| ()))
            }
            // Again on the blocking pool, where waiting for the write lock blocks no task.
            Applied::Busy => {
                let this = self.clone();
                let waited = tokio::task::spawn_blocking(move || {
                    let committed = this.patiently(conn, |c| match apply(c, &mut batch) {
                        Applied::Done(r) => r,
                        Applied::Busy => Err(rusqlite::Error::SqliteFailure(
                            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_BUSY),
                            Some("the write lock stayed taken".into()),
                        )),
                    });
                    finish(batch, committed.as_ref().map(|_| ()));
                })
                .await;
                if let Err(e) = waited {
                    tracing::error!("a batch of writes to the embedded database: {e}");
                }
            }
        }
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
        tokio::task::spawn_blocking(move || this.patiently(conn, |c| f(c)))
            .await
            .map_err(|e| RuntimeError::backend(op, e))?
            .map_err(|e| RuntimeError::backend(op, e))
    }

    /// `f` on `conn` with the busy timeout, so that it waits for the write lock; then the
    /// connection goes back idle. For the blocking pool only: the wait blocks the thread.
    fn patiently<R>(
        &self,
        conn: rusqlite::Connection,
        f: impl FnOnce(&rusqlite::Connection) -> rusqlite::Result<R>,
    ) -> rusqlite::Result<R> {
        let r = conn.busy_timeout(BUSY_TIMEOUT).and_then(|()| f(&conn));
        if conn.busy_timeout(Duration::ZERO).is_ok() && conn.is_autocommit() {
            self.give(conn);
        }
        r
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

    /// An insert of `key`, as a queued write.
    fn insert(
        direct: &Direct,
        key: &'static str,
    ) -> tokio::task::JoinHandle<Result<usize, RuntimeError>> {
        let direct = direct.clone();
        tokio::spawn(async move {
            direct
                .write("insert", move |c| {
                    c.execute(
                        "INSERT INTO kv (tenant, key, value, version, updated_at) VALUES ('t', ?1, 'v', 1, 0)",
                        [key],
                    )
                })
                .await
        })
    }

    async fn keys(direct: &Direct) -> Vec<String> {
        direct
            .read("keys", |c| {
                c.prepare("SELECT key FROM kv ORDER BY key")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<_>>>()
            })
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn writes_queued_together_commit_together_and_one_that_fails_leaves_the_others_whole() {
        let dir = std::env::temp_dir().join(format!("agentbus-batch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pool = open(&dir).await.unwrap();
        let direct = Direct::new(&dir);
        // Someone has the turn while three writes queue up behind it.
        let turn = direct.inner.turns.lock().await;
        let a = insert(&direct, "a");
        let twice = insert(&direct, "a");
        let b = insert(&direct, "b");
        while direct.inner.queue.lock().unwrap().len() < 3 {
            tokio::task::yield_now().await;
        }
        drop(turn);
        assert_eq!(a.await.unwrap().unwrap(), 1);
        let refused = twice.await.unwrap().unwrap_err().to_string();
        assert!(refused.contains("UNIQUE"), "{refused}");
        assert_eq!(b.await.unwrap().unwrap(), 1);
        assert_eq!(keys(&direct).await, ["a", "b"]);
        assert!(direct.inner.queue.lock().unwrap().is_empty());
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn a_queued_write_whose_caller_went_away_never_happens() {
        let dir = std::env::temp_dir().join(format!("agentbus-gone-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pool = open(&dir).await.unwrap();
        let direct = Direct::new(&dir);
        let turn = direct.inner.turns.lock().await;
        let gone = insert(&direct, "gone");
        while direct.inner.queue.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        gone.abort();
        assert!(gone.await.unwrap_err().is_cancelled());
        assert!(direct.inner.queue.lock().unwrap().is_empty());
        drop(turn);
        assert_eq!(insert(&direct, "kept").await.unwrap().unwrap(), 1);
        assert_eq!(keys(&direct).await, ["kept"]);
        pool.close().await;
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
