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
}
