//! The `postgres` sink's side of the database: connections with the batch
//! statement prepared, the column types read at start, the fast path (one
//! statement per batch) and the slow one (a savepoint per row), and what
//! each database error means for the batch.

use super::values::{ColumnArray, Kind, SUPPORTED};
use super::{PostgresSink, quote};
use crate::components::{ComponentError, Refused};
use crate::core::Event;
use tokio_postgres::types::Type;
use tokio_postgres::{Client, NoTls, Statement};

/// The table's side of the mapping, learnt at start.
pub(super) struct Layout {
    /// Per column: its kind and the array type it is sent as.
    kinds: Vec<(Kind, Type)>,
    array_types: Vec<Type>,
}

/// One connection with the batch statement prepared on it.
pub(super) struct Conn {
    pub(super) client: Client,
    insert: Statement,
}

/// What a database error means for the batch.
#[derive(Debug, PartialEq, Eq)]
enum Class {
    /// The rows' data (constraints, types, an upsert key twice in a batch).
    Rows,
    /// Worth retrying: connection, serialization, deadlock, resources.
    Retry,
    /// A mistake retrying cannot fix (the table changed, permissions).
    Permanent,
}

fn classify(e: &tokio_postgres::Error) -> Class {
    match e.code().map(|c| c.code()) {
        Some(code) => match &code[..2] {
            "21" | "22" | "23" => Class::Rows,
            "08" | "40" | "53" | "57" | "58" => Class::Retry,
            _ => Class::Permanent,
        },
        // No SQLSTATE: the connection failed or closed.
        None => Class::Retry,
    }
}

/// The database's message with its detail (`Key (id)=(5) already exists.`).
fn db_message(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => match db.detail() {
            Some(detail) => format!(
                "{} ({detail}) [SQLSTATE {}]",
                db.message(),
                db.code().code()
            ),
            None => format!("{} [SQLSTATE {}]", db.message(), db.code().code()),
        },
        None => {
            // The source holds the I/O reason ("connection refused").
            let mut text = e.to_string();
            if let Some(source) = std::error::Error::source(e) {
                text = format!("{text}: {source}");
            }
            text
        }
    }
}

impl PostgresSink {
    pub(super) fn error(&self, what: &str, e: &tokio_postgres::Error) -> ComponentError {
        let message = format!(
            "postgres {} table '{}': {what}: {}",
            self.server,
            self.config.table,
            db_message(e)
        );
        match classify(e) {
            // Rows here: a deferred constraint failing the whole
            // transaction at COMMIT, which no retry changes.
            Class::Permanent | Class::Rows => ComponentError::Permanent {
                message,
                error_type: "postgres",
            },
            _ => ComponentError::Transient {
                message,
                error_type: "postgres",
            },
        }
    }

    /// A new connection, with the batch statement prepared (and the table's
    /// column types read, the first time).
    pub(super) async fn connect(&self) -> Result<Conn, ComponentError> {
        let (client, connection) = self.pg.connect(NoTls).await.map_err(|e| {
            let err = self.error("connecting", &e);
            tracing::warn!(server = %self.server, table = %self.config.table, "postgres sink: {err}; a retry reconnects");
            err
        })?;
        tokio::spawn(async move {
            // Ends when the client is dropped or the server goes away; the
            // next query reports the latter.
            let _ = connection.await;
        });
        let ms = self.config.write_timeout.0.as_millis();
        client
            .batch_execute(&format!("SET statement_timeout = {ms}"))
            .await
            .map_err(|e| self.error("setting statement_timeout", &e))?;
        let layout = self
            .layout
            .get_or_try_init(|| self.read_layout(&client))
            .await?;
        let insert = client
            .prepare_typed(&self.config.insert_sql(), &layout.array_types)
            .await
            .map_err(|e| self.start_error(&e, true))?;
        Ok(Conn { client, insert })
    }

    /// The column types, from preparing a one-row insert (nothing runs).
    async fn read_layout(&self, client: &Client) -> Result<Layout, ComponentError> {
        let names: Vec<String> = self.columns.iter().map(|(c, _)| quote(c)).collect();
        let params: Vec<String> = (1..=names.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "INSERT INTO {} ({}) VALUES ({})",
            quote(&self.config.table),
            names.join(", "),
            params.join(", ")
        );
        let probe = client
            .prepare(&sql)
            .await
            .map_err(|e| self.start_error(&e, false))?;
        let mut kinds = Vec::with_capacity(names.len());
        for ((column, _), ty) in self.columns.iter().zip(probe.params()) {
            match Kind::of(ty) {
                Some(k) => kinds.push(k),
                None => {
                    return Err(ComponentError::Permanent {
                        message: format!(
                            "field 'columns': column '{column}' of table '{}' has type {ty}, which the postgres sink does not convert to (it converts to {SUPPORTED})",
                            self.config.table
                        ),
                        error_type: "postgres",
                    });
                }
            }
        }
        Ok(Layout {
            array_types: kinds.iter().map(|(_, a)| a.clone()).collect(),
            kinds: kinds
                .into_iter()
                .zip(probe.params().iter().cloned())
                .map(|((k, _), t)| (k, t))
                .collect(),
        })
    }

    /// An error preparing against the table, naming the field it is about.
    fn start_error(&self, e: &tokio_postgres::Error, upsert: bool) -> ComponentError {
        if classify(e) == Class::Retry {
            return self.error("preparing the insert", e);
        }
        let field = match e.code().map(|c| c.code()) {
            Some("42P01" | "3F000") => "table",
            Some("42703") => "columns",
            Some(_) if upsert => "on_conflict",
            _ => "table",
        };
        ComponentError::Permanent {
            message: format!(
                "field '{field}': postgres {} table '{}': {}",
                self.server,
                self.config.table,
                db_message(e)
            ),
            error_type: "postgres",
        }
    }

    pub(super) fn take(&self) -> Option<Conn> {
        // A poisoned lock only means a writer panicked; the list is intact.
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.client.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    pub(super) fn give_back(&self, conn: Conn) {
        if !conn.client.is_closed() {
            self.idle
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(conn);
        }
    }

    /// The batch's columns, the event index of each row, and the events
    /// whose values did not convert.
    fn arrays(
        &self,
        layout: &Layout,
        events: &[Event],
        only: Option<usize>,
    ) -> (Vec<ColumnArray>, Vec<usize>, Vec<Refused>) {
        let rows = if only.is_some() { 1 } else { events.len() };
        let mut arrays: Vec<ColumnArray> = layout
            .kinds
            .iter()
            .map(|(k, t)| ColumnArray::new(*k, t.clone(), rows))
            .collect();
        let mut row_of = Vec::with_capacity(rows);
        let mut refused = Vec::new();
        let mut marks = Vec::with_capacity(arrays.len());
        let range = match only {
            Some(i) => i..i + 1,
            None => 0..events.len(),
        };
        'events: for index in range {
            let event = &events[index];
            marks.clear();
            marks.extend(arrays.iter().map(ColumnArray::mark));
            for ((column, program), array) in self.columns.iter().zip(arrays.iter_mut()) {
                let failure = match program.first(event) {
                    Ok(value) => array.push(value.as_ref()).err().map(|e| (e, "encode")),
                    Err(e) => Some((e.to_string(), "program")),
                };
                if let Some((message, error_type)) = failure {
                    for (array, mark) in arrays.iter_mut().zip(&marks) {
                        array.reset_to(*mark);
                    }
                    refused.push(Refused {
                        index,
                        message: format!("column '{column}': {message}"),
                        error_type,
                    });
                    continue 'events;
                }
            }
            row_of.push(index);
        }
        (arrays, row_of, refused)
    }

    async fn insert(conn: &mut Conn, arrays: &[ColumnArray]) -> Result<(), tokio_postgres::Error> {
        let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            arrays.iter().map(|a| a as _).collect();
        let tx = conn.client.transaction().await?;
        tx.execute(&conn.insert, &params).await?;
        tx.commit().await
    }

    /// The slow pass: every row in its own savepoint, one transaction.
    async fn insert_each(
        &self,
        conn: &mut Conn,
        layout: &Layout,
        events: &[Event],
        rows: &[usize],
        refused: &mut Vec<Refused>,
    ) -> Result<(), tokio_postgres::Error> {
        let mut tx = conn.client.transaction().await?;
        for &index in rows {
            let (arrays, _, _) = self.arrays(layout, events, Some(index));
            let params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
                arrays.iter().map(|a| a as _).collect();
            let sp = tx.savepoint("flowgate_row").await?;
            match sp.execute(&conn.insert, &params).await {
                Ok(_) => sp.commit().await?,
                Err(e) if classify(&e) == Class::Rows => {
                    sp.rollback().await?;
                    refused.push(Refused {
                        index,
                        message: db_message(&e),
                        error_type: "postgres",
                    });
                }
                Err(e) => return Err(e),
            }
        }
        tx.commit().await
    }

    pub(super) async fn write_batch(
        &self,
        conn: &mut Conn,
        layout: &Layout,
        events: &[Event],
    ) -> Result<Vec<Refused>, ComponentError> {
        let (arrays, rows, mut refused) = self.arrays(layout, events, None);
        if rows.is_empty() {
            return Ok(refused);
        }
        match Self::insert(conn, &arrays).await {
            Ok(()) => Ok(refused),
            Err(e) if classify(&e) == Class::Rows => {
                drop(arrays);
                self.insert_each(conn, layout, events, &rows, &mut refused)
                    .await
                    .map_err(|e| self.error("writing row by row", &e))?;
                refused.sort_by_key(|r| r.index);
                Ok(refused)
            }
            Err(e) => Err(self.error("writing a batch", &e)),
        }
    }
}
