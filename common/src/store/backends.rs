//! The three backends: the operations of [`super::ops`] expanded over each one's pool,
//! with the little that really differs between them: `DIALECT`, `BEGIN`, `keep` (the
//! in-memory SQLite pool), `turn` (SQLite's in-process writer turn) and `checkpoint`
//! (SQLite's WAL checkpointer, woken by commits).

/// PostgreSQL.
pub(crate) mod postgres {
    const DIALECT: crate::store::sql::Dialect = crate::store::sql::Dialect::Postgres;
    const BEGIN: &str = "BEGIN";

    fn keep(_: &sqlx::PgPool) -> bool {
        false
    }

    fn turn(_: &sqlx::PgPool) -> Option<std::sync::Arc<tokio::sync::Mutex<()>>> {
        None
    }

    fn checkpoint(_: &sqlx::PgPool) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    crate::store::ops::operations!(sqlx::Postgres, returning);
}

/// MySQL and MariaDB.
pub(crate) mod mysql {
    const DIALECT: crate::store::sql::Dialect = crate::store::sql::Dialect::MySql;
    const BEGIN: &str = "BEGIN";

    fn keep(_: &sqlx::MySqlPool) -> bool {
        false
    }

    fn turn(_: &sqlx::MySqlPool) -> Option<std::sync::Arc<tokio::sync::Mutex<()>>> {
        None
    }

    fn checkpoint(_: &sqlx::MySqlPool) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        None
    }

    crate::store::ops::operations!(sqlx::MySql, last_insert_id);
}

/// SQLite (WAL mode).
pub(crate) mod sqlite {
    const DIALECT: crate::store::sql::Dialect = crate::store::sql::Dialect::Sqlite;
    /// SQLite write transactions take the write lock at once (see `store::write`).
    const BEGIN: &str = "BEGIN IMMEDIATE";

    fn keep(p: &sqlx::SqlitePool) -> bool {
        crate::store::sqlite_in_memory(p)
    }

    /// The writers of one database file in this process take turns (see `store::write`).
    fn turn(p: &sqlx::SqlitePool) -> Option<std::sync::Arc<tokio::sync::Mutex<()>>> {
        Some(crate::store::together::sqlite_turn(p))
    }

    /// What a commit wakes: the database file's WAL checkpointer (see `store::checkpoint`).
    fn checkpoint(p: &sqlx::SqlitePool) -> Option<std::sync::Arc<tokio::sync::Notify>> {
        crate::store::checkpoint::sqlite_checkpointer(p)
    }

    crate::store::ops::operations!(sqlx::Sqlite, returning);
}
