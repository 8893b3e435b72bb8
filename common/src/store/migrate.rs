//! Embedded migrations, one folder per backend with identical file names (style.md P7).

use sqlx::migrate::Migrator;

use super::Store;
use crate::error::StoreError;

pub(crate) static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");
pub(crate) static MYSQL: Migrator = sqlx::migrate!("../migrations/mysql");
pub(crate) static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");

/// Applies pending migrations. Idempotent; sqlx takes a database lock so several daemons
/// starting at once on one database apply each migration once.
///
/// # Errors
/// [`StoreError::Migrate`] if a migration fails or an applied one was changed.
pub async fn migrate(store: &Store) -> Result<(), StoreError> {
    match store {
        Store::Postgres(p) => POSTGRES.run(p).await?,
        Store::MySql(p) => migrate_mysql(p).await?,
        Store::Sqlite(p) => migrate_sqlite(p).await?,
    }
    Ok(())
}

/// sqlx takes no lock for SQLite migrations, so two processes starting together on a
/// fresh file both try migration 1 and the second finds its tables. Each SQLite
/// migration is one transaction (DDL included), so the loser rolled back whole: trying
/// again finds the migration applied and goes on.
async fn migrate_sqlite(pool: &sqlx::SqlitePool) -> Result<(), StoreError> {
    let mut attempt: u32 = 0;
    loop {
        match SQLITE.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::debug!(attempt, cause = %e, "SQLite migration raced another process; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Seconds a daemon waits for another one's migrations on MySQL/MariaDB.
const MYSQL_LOCK_WAIT: i64 = 600;

/// sqlx locks MySQL migrations with `GET_LOCK(name, -1)` and ignores the answer; MariaDB
/// answers NULL to a negative timeout, so two daemons starting together on a fresh
/// database would both migrate and one would fail. Take a named lock per database with
/// a positive timeout, check it was granted, and migrate on that connection.
async fn migrate_mysql(pool: &sqlx::MySqlPool) -> Result<(), StoreError> {
    let mut conn = pool.acquire().await?;
    let (granted,): (Option<i64>,) = sqlx::query_as("SELECT GET_LOCK(CONCAT('mmmail_migrate_', DATABASE()), ?)")
        .bind(MYSQL_LOCK_WAIT)
        .fetch_one(&mut *conn)
        .await?;
    if granted != Some(1) {
        return Err(StoreError::MigrationLock);
    }
    let result = MYSQL.run_direct(None, &mut *conn, false).await;
    let _ = sqlx::query("SELECT RELEASE_LOCK(CONCAT('mmmail_migrate_', DATABASE()))").execute(&mut *conn).await;
    Ok(result?)
}

/// Checks that every embedded migration has been applied (for `migrate = false`).
///
/// # Errors
/// [`StoreError::SchemaBehind`] naming the first missing migration version.
pub async fn check_current(store: &Store) -> Result<(), StoreError> {
    const Q: &str = "SELECT version FROM _sqlx_migrations WHERE success = TRUE";
    let (migrator, applied): (&Migrator, Result<Vec<(i64,)>, sqlx::Error>) = match store {
        Store::Postgres(p) => (&POSTGRES, sqlx::query_as(Q).fetch_all(p).await),
        Store::MySql(p) => (&MYSQL, sqlx::query_as(Q).fetch_all(p).await),
        Store::Sqlite(p) => (&SQLITE, sqlx::query_as(Q).fetch_all(p).await),
    };
    let applied: Vec<i64> = applied.unwrap_or_default().into_iter().map(|r| r.0).collect();
    match migrator.iter().find(|m| !applied.contains(&m.version)) {
        Some(m) => Err(StoreError::SchemaBehind(m.version)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    fn names(backend: &str) -> Vec<String> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../migrations").join(backend);
        let mut v: Vec<String> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_three_folders_hold_the_same_file_names() {
        let pg = names("postgres");
        assert!(!pg.is_empty());
        assert_eq!(pg, names("mysql"), "postgres vs mysql");
        assert_eq!(pg, names("sqlite"), "postgres vs sqlite");
        assert_eq!(super::POSTGRES.iter().count(), pg.len());
    }
}
