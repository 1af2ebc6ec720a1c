//! `postgres` sink: writes each event as a row of `table`, each column the
//! first output of its jq expression converted to the column's type (the
//! types come from the table itself, at start). A batch is one transaction
//! — written means committed — holding one statement:
//! `INSERT INTO t (..) SELECT * FROM unnest($1, $2, ..)` with one array
//! parameter per column (so its size does not grow the statement text or
//! the parameter count), optionally `ON CONFLICT (..) DO UPDATE | NOTHING`.
//!
//! Failures: a lost connection, a timeout, a serialization failure or a
//! deadlock fail the batch retryably (the stage's `retry`); the connection
//! is made again on the next attempt. When the database refuses the batch
//! for its data (a constraint, a value its type refuses: SQLSTATE classes
//! 21, 22, 23), the batch is written again row by row in one transaction, a
//! SAVEPOINT around each row: the refused rows fail alone, with the
//! database's message, and their batch-mates are committed. Savepoints, not
//! bisection: the slow pass runs only when a batch holds a bad row, makes
//! exactly one pass whatever the number of bad rows, and gives each bad row
//! its own message.
//!
//! A value its column's type cannot take fails its event before anything
//! is sent (`encode`). The password in `url` is never logged: messages name
//! the server as `host:port/dbname`.

mod values;
mod write;

use super::http::HttpBatchConfig;
use crate::components::{ComponentError, Encoded, Refused, Sink};
use crate::config::duration::ConfigDuration;
use crate::core::Batch;
use crate::expr::Program;
use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::OnceCell;
use write::{Conn, Layout};

/// What an upsert does with a row whose key exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConflictAction {
    /// Overwrite the existing row's other columns with the new values.
    Update,
    /// Keep the existing row; the new one is skipped (and counts as written).
    Nothing,
}

/// `INSERT ... ON CONFLICT`: upserts, so a redelivered batch is idempotent.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OnConflict {
    /// The key: columns of a unique index or constraint, e.g. `[id]`. Required for `update`.
    #[serde(default)]
    pub columns: Vec<String>,
    /// `update` (the other mapped columns take the new values) or `nothing`.
    pub action: ConflictAction,
}

fn thirty_seconds() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(30))
}

fn five_seconds() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(5))
}

/// Writes events as rows of a PostgreSQL table.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    /// A libpq connection URL, e.g. `postgresql://flowgate:${PGPASSWORD}@db:5432/app`
    /// (keep secrets in `${VAR}`s; the password is never logged). TLS is not supported yet:
    /// `sslmode=disable` or `prefer` (falls back to plain).
    pub url: String,
    /// The table, optionally schema-qualified (`public.events`). Names are quoted: their case
    /// is kept.
    pub table: String,
    /// `{column: jq expression}`: each column takes the expression's first output (none, or
    /// `null`: NULL), converted to the column's type, looked up at start: boolean, smallint,
    /// integer, bigint (integers or integer strings), real, double precision, numeric
    /// (numbers or numeric strings), text, varchar, char (strings; other values as JSON),
    /// json, jsonb (any value), uuid (strings), timestamptz, timestamp (RFC 3339 strings or
    /// epoch seconds), date (`YYYY-MM-DD`). A value that does not convert fails its event
    /// alone (error type `encode`).
    pub columns: IndexMap<String, String>,
    /// Upsert: `{columns: [id], action: update | nothing}`. Absent: plain inserts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_conflict: Option<OnConflict>,
    /// Rows per transaction: `max_events` (500) and `timeout` (1s) to fill one.
    #[serde(default)]
    pub batch: HttpBatchConfig,
    /// Limit for writing one batch, from taking a connection to COMMIT (default 30s); also the
    /// server's `statement_timeout`. Past it the connection is closed (the server rolls the
    /// transaction back) and the batch fails retryably with error type `timeout`.
    #[serde(default = "thirty_seconds")]
    pub write_timeout: ConfigDuration,
    /// Limit for opening a connection (default 5s). Each write in flight holds one connection
    /// (at most `workers` in all); idle ones are kept for the next batch.
    #[serde(default = "five_seconds")]
    pub connect_timeout: ConfigDuration,
}

/// `"a"."b"` for `a.b`: identifiers quoted, inner quotes doubled.
fn quote(name: &str) -> String {
    name.split('.')
        .map(|part| format!("\"{}\"", part.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(".")
}

fn compile(column: &str, code: &str) -> Result<Program, String> {
    Program::compile(code).map_err(|errors| {
        let messages: Vec<String> = errors.into_iter().map(|e| e.message).collect();
        format!(
            "column '{column}': in jq program '{code}': {}",
            messages.join("; ")
        )
    })
}

impl PostgresSinkConfig {
    pub fn check(&self) -> Vec<(Vec<&'static str>, String)> {
        let mut problems = Vec::new();
        if let Err(e) = self.url.parse::<tokio_postgres::Config>() {
            problems.push((vec!["url"], format!("not a PostgreSQL connection URL: {e}")));
        }
        if self.table.is_empty() || self.table.split('.').any(str::is_empty) {
            problems.push((
                vec!["table"],
                format!("'{}' is not a table name", self.table),
            ));
        }
        if self.columns.is_empty() {
            problems.push((vec!["columns"], "needs at least one column".into()));
        }
        for (column, code) in &self.columns {
            if let Err(e) = compile(column, code) {
                problems.push((vec!["columns"], e));
            }
        }
        if let Some(c) = &self.on_conflict {
            if c.action == ConflictAction::Update && c.columns.is_empty() {
                problems.push((
                    vec!["on_conflict", "columns"],
                    "action 'update' needs the key columns".into(),
                ));
            }
            for key in c.columns.iter().filter(|k| !self.columns.contains_key(*k)) {
                problems.push((
                    vec!["on_conflict", "columns"],
                    format!("'{key}' is not one of the mapped columns"),
                ));
            }
        }
        if self.batch.max_events == 0 {
            problems.push((vec!["batch", "max_events"], "must be at least 1".into()));
        }
        for (key, d) in [
            ("write_timeout", &self.write_timeout),
            ("connect_timeout", &self.connect_timeout),
        ] {
            if d.0.is_zero() {
                problems.push((vec![key], "must be longer than 0s".into()));
            }
        }
        problems
    }

    pub fn build(&self) -> PostgresSink {
        // `check` refused bad URLs and programs before anything is built.
        let mut pg: tokio_postgres::Config = self.url.parse().unwrap_or_default();
        pg.connect_timeout(self.connect_timeout.0);
        pg.keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("flowgate");
        }
        let columns = self
            .columns
            .iter()
            .filter_map(|(c, code)| Some((c.clone(), compile(c, code).ok()?)))
            .collect();
        PostgresSink {
            server: server_name(&pg),
            pg,
            config: self.clone(),
            columns,
            layout: OnceCell::new(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The fast-path statement for `types` (the columns' scalar types).
    fn insert_sql(&self) -> String {
        let names: Vec<String> = self.columns.keys().map(|c| quote(c)).collect();
        let params: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let mut sql = format!(
            "INSERT INTO {} ({}) SELECT * FROM unnest({})",
            quote(&self.table),
            names.join(", "),
            params.join(", ")
        );
        if let Some(c) = &self.on_conflict {
            let keys: Vec<String> = c.columns.iter().map(|k| quote(k)).collect();
            let target = if keys.is_empty() {
                String::new()
            } else {
                format!(" ({})", keys.join(", "))
            };
            let sets: Vec<String> = self
                .columns
                .keys()
                .filter(|k| !c.columns.contains(k))
                .map(|k| format!("{0} = EXCLUDED.{0}", quote(k)))
                .collect();
            match c.action {
                ConflictAction::Update if !sets.is_empty() => {
                    sql += &format!(" ON CONFLICT{target} DO UPDATE SET {}", sets.join(", "))
                }
                _ => sql += &format!(" ON CONFLICT{target} DO NOTHING"),
            }
        }
        sql
    }
}

/// `host:port/dbname`, for messages (never the URL: it may hold a password).
fn server_name(pg: &tokio_postgres::Config) -> String {
    use tokio_postgres::config::Host;
    let host = match pg.get_hosts().first() {
        Some(Host::Tcp(h)) => h.clone(),
        Some(Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = pg.get_ports().first().copied().unwrap_or(5432);
    format!(
        "{host}:{port}/{}",
        pg.get_dbname().unwrap_or("(default database)")
    )
}

pub struct PostgresSink {
    config: PostgresSinkConfig,
    pg: tokio_postgres::Config,
    server: String,
    columns: Vec<(String, Program)>,
    /// Column types, once a connection has read them.
    layout: OnceCell<Layout>,
    /// Connections between writes; at most one per write in flight.
    idle: Mutex<Vec<Conn>>,
}

#[async_trait::async_trait]
impl Sink for PostgresSink {
    fn batching(&self) -> Option<(usize, Duration)> {
        Some((self.config.batch.max_events, self.config.batch.timeout.0))
    }

    fn concurrent_writes(&self) -> bool {
        true
    }

    fn encode(&self, batch: Batch) -> Encoded {
        // Values are converted at write time, once the column types are known.
        Encoded {
            events: batch,
            ..Encoded::default()
        }
    }

    /// Checks the table and columns; an unreachable server is not an error
    /// yet (writes retry), a missing table or column is.
    async fn start(&self) -> Result<(), ComponentError> {
        let limit = self.config.connect_timeout.0 + self.config.write_timeout.0;
        match tokio::time::timeout(limit, self.connect()).await {
            Ok(Ok(conn)) => {
                self.give_back(conn);
                Ok(())
            }
            Ok(Err(e @ ComponentError::Permanent { .. })) => Err(e),
            // Not reachable yet (`connect` warned): the writes retry.
            Ok(Err(_)) => Ok(()),
            Err(_) => {
                tracing::warn!(server = %self.server, table = %self.config.table, "postgres sink: the server did not answer within {limit:?} at start; writes retry");
                Ok(())
            }
        }
    }

    async fn write(&self, encoded: &Encoded) -> Result<(), ComponentError> {
        match self.write_refusing(encoded).await?.first() {
            None => Ok(()),
            Some(r) => Err(ComponentError::Permanent {
                message: r.message.clone(),
                error_type: r.error_type,
            }),
        }
    }

    async fn write_refusing(&self, encoded: &Encoded) -> Result<Vec<Refused>, ComponentError> {
        let limit = self.config.write_timeout.0;
        let attempt = async {
            let mut conn = match self.take() {
                Some(conn) => conn,
                None => self.connect().await?,
            };
            // `connect` read the layout.
            let layout = self
                .layout
                .get()
                .ok_or_else(|| ComponentError::Other("postgres: no column types".into()))?;
            let result = self.write_batch(&mut conn, layout, &encoded.events).await;
            if let Err(e) = &result
                && conn.client.is_closed()
            {
                tracing::warn!(server = %self.server, table = %self.config.table, "postgres sink: connection lost: {e}; a retry reconnects");
            }
            // A connection whose transaction failed is clean again once
            // the failure is answered; a closed one is dropped here.
            self.give_back(conn);
            result
        };
        match tokio::time::timeout(limit, attempt).await {
            Ok(result) => result,
            // The dropped future closed its connection: the server rolls
            // the transaction back.
            Err(_) => Err(ComponentError::Overloaded {
                message: format!(
                    "postgres {} table '{}': writing a batch took longer than write_timeout ({limit:?})",
                    self.server, self.config.table
                ),
                error_type: "timeout",
            }),
        }
    }

    async fn flush(&self) -> Result<(), ComponentError> {
        // Every batch was committed before its write returned.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_statement_quotes_names_and_upserts_the_other_columns() {
        let config: PostgresSinkConfig = serde_yaml::from_str(
            "{url: 'postgresql://u:secret@db:6543/app', table: public.Events, columns: {id: .id, msg: .message, at: .ts}, on_conflict: {columns: [id], action: update}}",
        )
        .unwrap();
        assert!(config.check().is_empty(), "{:?}", config.check());
        assert_eq!(
            config.insert_sql(),
            "INSERT INTO \"public\".\"Events\" (\"id\", \"msg\", \"at\") SELECT * FROM unnest($1, $2, $3) \
             ON CONFLICT (\"id\") DO UPDATE SET \"msg\" = EXCLUDED.\"msg\", \"at\" = EXCLUDED.\"at\""
        );
        assert_eq!(config.build().server, "db:6543/app");
    }

    #[test]
    fn bad_urls_programs_and_keys_are_reported() {
        let config: PostgresSinkConfig = serde_yaml::from_str(
            "{url: 'mysql://x', table: 'a.', columns: {id: '.[', n: .n}, on_conflict: {columns: [nope], action: update}, batch: {max_events: 0}}",
        )
        .unwrap();
        let problems = config.check();
        let keys: Vec<_> = problems.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(
            keys,
            vec![
                vec!["url"],
                vec!["table"],
                vec!["columns"],
                vec!["on_conflict", "columns"],
                vec!["batch", "max_events"]
            ]
        );
        assert!(
            problems[2].1.starts_with("column 'id': in jq program '.['"),
            "{}",
            problems[2].1
        );
    }
}
