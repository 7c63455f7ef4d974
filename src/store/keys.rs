//! API keys.

use super::{
    Result, Store, StoreError, from_json, inline_reads::by_name, on_pool, on_writer, to_json,
};
use crate::domain::{
    api_key::ApiKey,
    tenant::{Scope, Tenant},
};

#[derive(sqlx::FromRow, serde::Deserialize)]
struct KeyRow {
    id: String,
    name: Option<String>,
    key_prefix: String,
    user_id: String,
    company_id: String,
    scopes: String,
    created_at: i64,
    revoked_at: Option<i64>,
}

impl TryFrom<KeyRow> for ApiKey {
    type Error = StoreError;

    fn try_from(row: KeyRow) -> Result<ApiKey> {
        let names: Vec<String> = from_json("scopes", &row.scopes)?;
        Ok(ApiKey {
            id: row.id,
            name: row.name,
            key_prefix: row.key_prefix,
            tenant: Tenant {
                user_id: row.user_id,
                company_id: row.company_id,
            },
            // A scope this version does not know is dropped rather than failing the key.
            scopes: names.iter().filter_map(|n| Scope::parse(n)).collect(),
            created_at: row.created_at,
            revoked_at: row.revoked_at,
        })
    }
}

/// A live API key, and the company version (see `company_versions`) read with it: the
/// publisher checks its cache of the company's webhooks against it without a read of its own.
pub struct KeyHolder {
    pub key: ApiKey,
    pub company_version: i64,
}

#[derive(sqlx::FromRow)]
struct HolderRow {
    #[sqlx(flatten)]
    key: KeyRow,
    company_version: i64,
}

impl HolderRow {
    fn inline(row: &rusqlite::Row<'_>) -> Result<HolderRow> {
        Ok(HolderRow {
            key: by_name(row)?,
            company_version: row.get("company_version")?,
        })
    }
}

const KEY_COLUMNS: &str =
    "id, name, key_prefix, user_id, company_id, scopes, created_at, revoked_at";

impl Store {
    pub async fn insert_api_key(&self, key: &ApiKey, key_hash: &str) -> Result<()> {
        let scopes: Vec<&str> = key.scopes.iter().map(|s| s.as_str()).collect();
        on_writer!(self, pool => sqlx::query(
            "INSERT INTO api_keys (id, name, key_prefix, key_hash, user_id, company_id, scopes, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&key.id)
        .bind(&key.name)
        .bind(&key.key_prefix)
        .bind(key_hash)
        .bind(&key.tenant.user_id)
        .bind(&key.tenant.company_id)
        .bind(to_json(&scopes))
        .bind(key.created_at)
        .execute(pool)
        .await
        .map(drop)?);
        Ok(())
    }

    /// The live (not revoked) key with this hash, and its company's webhook version, which a
    /// publish made with the key needs next (one read instead of two; see [`KeyHolder`]).
    pub async fn find_api_key(&self, key_hash: &str) -> Result<Option<KeyHolder>> {
        let sql = format!(
            "SELECT {KEY_COLUMNS}, COALESCE((SELECT version FROM company_versions v
                WHERE v.company_id = api_keys.company_id), 0) AS company_version
             FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL"
        );
        let row = self
            .point_read_as(&sql, &[key_hash], HolderRow::inline)
            .await?;
        row.map(|row| {
            Ok(KeyHolder {
                key: row.key.try_into()?,
                company_version: row.company_version,
            })
        })
        .transpose()
    }

    pub async fn list_api_keys(&self) -> Result<Vec<ApiKey>> {
        let sql = format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at, id");
        let rows: Vec<KeyRow> = on_pool!(self, pool => sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await?);
        rows.into_iter().map(ApiKey::try_from).collect()
    }

    /// Marks a key revoked; revoking twice is not an error. `NotFound` for an unknown id.
    pub async fn revoke_api_key(&self, id: &str, now: i64) -> Result<()> {
        let done = on_writer!(self, pool => sqlx::query(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1",
        )
        .bind(id)
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected());
        if done == 0 {
            return Err(StoreError::NotFound);
        }
        Ok(())
    }
}
