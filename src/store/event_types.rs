//! Event types that companies define (migration 0013).

use super::{
    Result, Store, StoreError, from_json, insert_within_quota, on_pool, on_writer, to_json,
};
use crate::domain::{custom_types::CustomEventType, quota::Owned};

#[derive(sqlx::FromRow)]
struct EventTypeRow {
    company_id: String,
    name: String,
    description: Option<String>,
    data_schema: Option<String>,
    version: i64,
    created_by: String,
    created_at: i64,
    updated_at: i64,
    archived_at: Option<i64>,
}

impl TryFrom<EventTypeRow> for CustomEventType {
    type Error = StoreError;

    fn try_from(row: EventTypeRow) -> Result<CustomEventType> {
        Ok(CustomEventType {
            company_id: row.company_id,
            name: row.name,
            description: row.description,
            schema: row
                .data_schema
                .map(|text| from_json("data_schema", &text))
                .transpose()?,
            version: row.version,
            created_by: row.created_by,
            created_at: row.created_at,
            updated_at: row.updated_at,
            archived_at: row.archived_at,
        })
    }
}

const COLUMNS: &str = "company_id, name, description, data_schema, version, created_by, \
     created_at, updated_at, archived_at";

impl Store {
    /// Inserts a new type; a name the company already has (archived or not) is a conflict.
    /// Inserts a new type unless the company has `most` types already; a name the company
    /// already has (archived or not) is a conflict.
    pub async fn insert_event_type(&self, event_type: &CustomEventType, most: i64) -> Result<()> {
        let company = event_type.company_id.as_str();
        let inserted: Result<()> = async {
            insert_within_quota!(self, Owned::EventTypes, most, company, tx => sqlx::query(
                "INSERT INTO event_types (company_id, name, description, data_schema, version,
                     created_by, created_at, updated_at, archived_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(&event_type.company_id)
            .bind(&event_type.name)
            .bind(&event_type.description)
            .bind(event_type.schema.as_ref().map(to_json))
            .bind(event_type.version)
            .bind(&event_type.created_by)
            .bind(event_type.created_at)
            .bind(event_type.updated_at)
            .bind(event_type.archived_at)
            .execute(&mut *tx)
            .await?);
            Ok(())
        }
        .await;
        inserted.map_err(|error| match error {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "name: your company already has an event type {:?} (an archived one is \
                 restored with PUT {{\"archived\": false}})",
                event_type.name
            )),
            other => other,
        })
    }

    /// The company's types, archived ones included, by name.
    pub async fn list_event_types(&self, company_id: &str) -> Result<Vec<CustomEventType>> {
        let sql = format!("SELECT {COLUMNS} FROM event_types WHERE company_id = $1 ORDER BY name");
        let rows: Vec<EventTypeRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(company_id)
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(CustomEventType::try_from).collect()
    }

    /// The names of the company's types, archived ones included.
    pub async fn event_type_names(&self, company_id: &str) -> Result<Vec<String>> {
        Ok(on_pool!(self, pool => sqlx::query_scalar(
            "SELECT name FROM event_types WHERE company_id = $1",
        )
        .bind(company_id)
        .fetch_all(pool)
        .await?))
    }

    /// One of the company's types; `NotFound` for another company's.
    pub async fn get_event_type(&self, company_id: &str, name: &str) -> Result<CustomEventType> {
        let sql = format!("SELECT {COLUMNS} FROM event_types WHERE company_id = $1 AND name = $2");
        let row: EventTypeRow = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(company_id)
            .bind(name)
            .fetch_one(pool)
            .await?);
        row.try_into()
    }

    /// A type's version and whether it is archived (`archived_at`), without its schema: what a
    /// publish needs when it holds the schema compiled already.
    pub async fn event_type_version(
        &self,
        company_id: &str,
        name: &str,
    ) -> Result<Option<(i64, Option<i64>)>> {
        self.point_read(
            "SELECT version, archived_at FROM event_types WHERE company_id = $1 AND name = $2",
            &[company_id, name],
        )
        .await
    }

    /// Saves `next`, the version after `current`, only if the stored type is still `current`'s
    /// version: of two concurrent changes, the second is a conflict instead of undoing the first.
    pub async fn update_event_type(
        &self,
        current: &CustomEventType,
        next: &CustomEventType,
    ) -> Result<()> {
        let done = on_writer!(self, pool => sqlx::query(
            "UPDATE event_types SET description = $3, data_schema = $4, version = $5,
                 updated_at = $6, archived_at = $7
             WHERE company_id = $1 AND name = $2 AND version = $8",
        )
        .bind(&next.company_id)
        .bind(&next.name)
        .bind(&next.description)
        .bind(next.schema.as_ref().map(to_json))
        .bind(next.version)
        .bind(next.updated_at)
        .bind(next.archived_at)
        .bind(current.version)
        .execute(pool)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(StoreError::Conflict(format!(
                "event type {:?} was changed meanwhile; read it again and retry",
                next.name
            )));
        }
        Ok(())
    }
}
