//! Embedded migrations, one folder per backend with identical file names (style.md P7).

use std::time::Duration;

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
const MYSQL_LOCK_WAIT: u64 = 600;
/// Seconds the migration lock is held without renewal: a migrator that dies frees it
/// after at most this long.
const MYSQL_LOCK_LEASE: i64 = 60;
/// Seconds between renewals of the lease while migrating.
const MYSQL_LOCK_RENEW: u64 = 15;

/// The migration lock's table on MySQL/MariaDB: at most one row, the migrator's lease.
const MYSQL_LOCK_TABLE: &str = "CREATE TABLE IF NOT EXISTS _mmmail_migration_lock (\
     lock_id INT NOT NULL PRIMARY KEY, lock_owner VARCHAR(64) NOT NULL, lock_expires BIGINT NOT NULL\
     ) ENGINE=InnoDB";

/// Migrations on MySQL/MariaDB, safe with daemons on several servers of a Galera
/// cluster starting at once.
///
/// sqlx's own lock is `GET_LOCK`, which Galera does not replicate: each node grants it
/// to its own client, so every node migrated at once. The lock here is a committed row
/// (`_mmmail_migration_lock`, a lease of [`MYSQL_LOCK_LEASE`] seconds renewed while
/// migrating): Galera certifies concurrent inserts of it so that exactly one commits,
/// and on one server the primary key does the same. The others wait and then find the
/// migrations applied. A migrator that died half-way (MySQL DDL commits as it goes, so
/// its `_sqlx_migrations` row stays `success = FALSE`) is finished by the next one:
/// see [`finish_interrupted`].
async fn migrate_mysql(pool: &sqlx::MySqlPool) -> Result<(), StoreError> {
    sqlx::query(MYSQL_LOCK_TABLE).execute(pool).await?;
    let owner = format!("{}.{}", std::process::id(), crate::random_hex(8));
    take_mysql_lock(pool, &owner).await?;
    let renewal = {
        let (pool, owner) = (pool.clone(), owner.clone());
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(MYSQL_LOCK_RENEW)).await;
                let _ = sqlx::query(
                    "UPDATE _mmmail_migration_lock SET lock_expires = UNIX_TIMESTAMP() + ? \
                     WHERE lock_id = 1 AND lock_owner = ?",
                )
                .bind(MYSQL_LOCK_LEASE)
                .bind(&owner)
                .execute(&pool)
                .await;
            }
        })
    };
    let result = async {
        let mut conn = pool.acquire().await?;
        // On Galera, read what the cluster has committed, not what this node has applied
        // so far. Other servers do not know the variable, or ignore it.
        let _ = sqlx::query("SET SESSION wsrep_sync_wait = 15").execute(&mut *conn).await;
        finish_interrupted(&mut conn).await?;
        MYSQL.run_direct(None, &mut *conn, false).await?;
        Ok::<(), StoreError>(())
    }
    .await;
    renewal.abort();
    for attempt in 1..=5u64 {
        match sqlx::query("DELETE FROM _mmmail_migration_lock WHERE lock_id = 1 AND lock_owner = ?")
            .bind(&owner)
            .execute(pool)
            .await
        {
            Ok(_) => break,
            Err(e) => {
                tracing::warn!(cause = %e, "releasing the migration lock failed; it expires by itself");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
        }
    }
    result
}

/// Takes the migration lock's row for `owner`, waiting up to [`MYSQL_LOCK_WAIT`]
/// seconds while another daemon holds it; an expired lease is removed first.
async fn take_mysql_lock(pool: &sqlx::MySqlPool, owner: &str) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(MYSQL_LOCK_WAIT);
    let mut told = false;
    loop {
        // The server's clock, not the hosts': daemons on several hosts compare leases.
        let _ = sqlx::query("DELETE FROM _mmmail_migration_lock WHERE lock_id = 1 AND lock_expires < UNIX_TIMESTAMP()")
            .execute(pool)
            .await;
        let taken = sqlx::query(
            "INSERT INTO _mmmail_migration_lock (lock_id, lock_owner, lock_expires) VALUES (1, ?, UNIX_TIMESTAMP() + ?)",
        )
        .bind(owner)
        .bind(MYSQL_LOCK_LEASE)
                .execute(pool)
                .await
                .map_err(StoreError::from);
        match taken {
            Ok(_) => return Ok(()),
            // Held by another daemon (duplicate key), or taken by one at the same moment
            // on another Galera node (certification failure, 1213).
            Err(e) if e.is_duplicate() || e.is_retryable() => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(StoreError::MigrationLock);
                }
                if !told {
                    tracing::info!("another daemon is migrating the database; waiting for it");
                    told = true;
                }
                tokio::time::sleep(Duration::from_millis(100 + getrandom::u64().unwrap_or(0) % 300)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// MySQL error numbers meaning "this statement's work is there already": table (1050),
/// column (1060), key (1061), primary key (1068), index or foreign key (1022, 1826),
/// trigger (1359) exists, or a DROP found nothing (1091).
const ALREADY_DONE: [u16; 8] = [1050, 1060, 1061, 1068, 1022, 1826, 1359, 1091];

/// Finishes a migration that a migrator left half-applied (its row in
/// `_sqlx_migrations` says `success = FALSE`; sqlx would refuse to go on with
/// "migration N is partially applied"). Each statement of it is run again, those whose
/// work is there already ([`ALREADY_DONE`]) are passed over, and the row is marked
/// applied. Runs under the migration lock, so no other migrator is at work.
async fn finish_interrupted(conn: &mut sqlx::MySqlConnection) -> Result<(), StoreError> {
    let dirty: Vec<(i64,)> =
        match sqlx::query_as("SELECT version FROM _sqlx_migrations WHERE success = FALSE ORDER BY version")
            .fetch_all(&mut *conn)
            .await
        {
            Ok(v) => v,
            // No table yet: a fresh database.
            Err(sqlx::Error::Database(e)) if mysql_number(e.as_ref()) == Some(1146) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
    for (version,) in dirty {
        let Some(migration) = MYSQL.iter().find(|m| m.version == version) else {
            continue;
        };
        tracing::warn!(version, "migration {version} was left half-applied by a migrator that stopped; finishing it");
        for statement in statements(migration.sql.as_str()) {
            match sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut *conn).await {
                Ok(_) => {}
                Err(sqlx::Error::Database(e))
                    if mysql_number(e.as_ref()).is_some_and(|n| ALREADY_DONE.contains(&n)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        sqlx::query("UPDATE _sqlx_migrations SET success = TRUE WHERE version = ?")
            .bind(version)
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

/// The MySQL error number of a database error.
fn mysql_number(e: &dyn sqlx::error::DatabaseError) -> Option<u16> {
    e.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>().map(sqlx::mysql::MySqlDatabaseError::number)
}

/// The statements of a migration file: each begins on a line that starts in column 0
/// with neither a comment (`--`) nor a closing parenthesis, and runs to the next such
/// line (trigger bodies, indented, stay inside their `CREATE TRIGGER`).
fn statements(sql: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in sql.lines() {
        let starts = !line.is_empty()
            && !line.starts_with(char::is_whitespace)
            && !line.starts_with("--")
            && !line.starts_with(')');
        if starts {
            out.push(String::new());
        }
        if let Some(current) = out.last_mut()
            && !line.trim_start().starts_with("--")
        {
            current.push_str(line);
            current.push('\n');
        }
    }
    out
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
    fn mysql_migrations_split_into_their_statements() {
        let by_version = |v: i64| super::statements(super::MYSQL.iter().find(|m| m.version == v).unwrap().sql.as_str());
        let initial = by_version(1);
        assert_eq!(initial.len(), 6, "{initial:#?}");
        assert!(initial.iter().all(|s| s.starts_with("CREATE TABLE ") && s.trim_end().ends_with(';')));
        let triggers = by_version(4);
        assert_eq!(triggers.len(), 2, "{triggers:#?}");
        assert!(triggers.iter().all(|s| s.starts_with("CREATE TRIGGER ") && s.trim_end().ends_with("END IF;")));
        for m in super::MYSQL.iter() {
            let text: String = super::statements(m.sql.as_str()).concat();
            let code = |s: &str| {
                s.lines()
                    .filter(|l| !l.trim_start().starts_with("--") && !l.trim().is_empty())
                    .collect::<Vec<_>>()
                    .join("\n")
            };
            assert_eq!(code(&text), code(m.sql.as_str()), "migration {} lost text in the split", m.version);
        }
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
