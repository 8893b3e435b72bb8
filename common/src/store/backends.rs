//! The three backends: the operations of [`super::ops`] expanded over each one's pool,
//! with the little that really differs between them.

/// PostgreSQL.
pub(crate) mod postgres {
    const DIALECT: crate::store::sql::Dialect = crate::store::sql::Dialect::Postgres;
    const BEGIN: &str = "BEGIN";

    fn keep(_: &sqlx::PgPool) -> bool {
        false
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

    crate::store::ops::operations!(sqlx::Sqlite, returning);
}
