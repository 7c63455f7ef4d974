//! What a company may publish and subscribe to: the built-in types and the company's own, whose
//! schemas are compiled once per version and kept, so that a publish does not compile again.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio::sync::Semaphore;

use crate::{
    domain::{
        Invalid,
        custom_types::EventSchema,
        event::NewEvent,
        event_types::{all_builtin, check_known_patterns, is_builtin},
    },
    store::{Store, StoreError},
};

/// Most compiled schemas kept per node; past it the cache starts afresh (types are few per
/// company, so this is reached only by very many companies, and costs one compile each).
const MAX_COMPILED: usize = 10_000;

/// How long a publish waits for a turn to check its events against their schemas before it is
/// answered 503 (as a template render waits for a sandbox worker).
const CHECK_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Invalid(#[from] Invalid),
    #[error("checking events against their schemas failed: {0}")]
    Aborted(#[from] tokio::task::JoinError),
    #[error("every schema check of this node is busy")]
    Busy,
}

/// A company's type as a publish needs it: its version and its compiled schema, if it has one.
type Compiled = (i64, Option<Arc<EventSchema>>);

pub struct Catalogue {
    store: Store,
    /// (company, type name) → the latest version seen and its schema. Keyed by version too in
    /// effect: a type changed (on any node) has a new version, which is compiled afresh.
    compiled: Mutex<HashMap<(String, String), Compiled>>,
    /// Turns to run schema checks: at most half the node's cores check at once. A check is
    /// bounded (see `EventSchema::compile`) but the worst accepted schema and body take
    /// about a second of CPU, and without a cap a company's concurrent publishes of such
    /// events would take every core from the other companies' requests.
    checks: Arc<Semaphore>,
    check_wait: Duration,
}

impl Catalogue {
    pub fn new(store: Store) -> Catalogue {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Catalogue {
            store,
            compiled: Mutex::default(),
            checks: Arc::new(Semaphore::new(cores.div_ceil(2))),
            check_wait: CHECK_WAIT,
        }
    }

    /// Checks events that `company_id` is about to publish, and gives them back: each type is
    /// built-in or one of the company's own that is not archived, and the `data` of the latter
    /// matches its schema. `field(i)` prefixes the field names of the `i`th event (`events[3].`).
    pub async fn check_events(
        &self,
        company_id: &str,
        events: Vec<NewEvent>,
        field: impl Fn(usize) -> String + Send + 'static,
    ) -> Result<Vec<NewEvent>, CatalogueError> {
        // A batch of many events of one type reads (and compiles) that type once.
        let mut seen: HashMap<&str, Option<Arc<EventSchema>>> = HashMap::new();
        let mut schemas = Vec::with_capacity(events.len());
        for (i, event) in events.iter().enumerate() {
            let name = event.event_type.as_str();
            let schema = match seen.get(name) {
                Some(schema) => schema.clone(),
                None if is_builtin(name) => None,
                None => {
                    let schema = self
                        .publishable(company_id, name, &format!("{}event_type", field(i)))
                        .await?;
                    seen.insert(name, schema.clone());
                    schema
                }
            };
            schemas.push(schema);
        }
        if schemas.iter().all(Option::is_none) {
            return Ok(events);
        }
        // Checking is bounded (see `EventSchema::compile`) but may take a while for large data
        // and schemas: off the threads that serve requests.
        let turn = tokio::time::timeout(self.check_wait, Arc::clone(&self.checks).acquire_owned())
            .await
            .map_err(|_| CatalogueError::Busy)?
            .map_err(|_| CatalogueError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _turn = turn;
            for (i, (event, schema)) in events.iter().zip(&schemas).enumerate() {
                if let Some(schema) = schema {
                    schema.check(&format!("{}data", field(i)), &event.data)?;
                }
            }
            Ok(events)
        })
        .await?
    }

    /// Checks that each subscription pattern covers a built-in type or one of the company's
    /// own (archived ones too: subscriptions to them keep working). Reads the company's types
    /// only when some pattern covers no built-in type.
    pub async fn check_patterns(
        &self,
        company_id: &str,
        field: &str,
        patterns: &[String],
    ) -> Result<(), CatalogueError> {
        if all_builtin(patterns) {
            return Ok(());
        }
        let custom = self.store.event_type_names(company_id).await?;
        Ok(check_known_patterns(field, patterns, &custom)?)
    }

    /// The schema of the company's type `name`, which must exist and not be archived.
    async fn publishable(
        &self,
        company_id: &str,
        name: &str,
        field: &str,
    ) -> Result<Option<Arc<EventSchema>>, CatalogueError> {
        let Some((version, archived_at)) = self.store.event_type_version(company_id, name).await?
        else {
            return Err(Invalid::new(
                field,
                format!("unknown event type {name:?}; GET /api/event-types lists them, and POST /api/event-types defines your own"),
            )
            .into());
        };
        if archived_at.is_some() {
            return Err(Invalid::new(
                field,
                format!(
                    "event type {name:?} is archived: it takes no new events (PUT /api/event-types/{name} {{\"archived\": false}} restores it)"
                ),
            )
            .into());
        }
        let key = (company_id.to_string(), name.to_string());
        if let Some((at, schema)) = self.compiled.lock().expect("cache lock").get(&key)
            && *at == version
        {
            return Ok(schema.clone());
        }
        let stored = self.store.get_event_type(company_id, name).await?;
        let schema = match &stored.schema {
            Some(schema) => Some(Arc::new(EventSchema::compile(schema).map_err(|e| {
                Invalid::new(
                    field,
                    format!("the schema of {name:?} no longer compiles ({e}); PUT a new one"),
                )
            })?)),
            None => None,
        };
        let mut compiled = self.compiled.lock().expect("cache lock");
        if compiled.len() >= MAX_COMPILED {
            compiled.clear();
        }
        compiled.insert(key, (stored.version, schema.clone()));
        Ok(schema)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::domain::custom_types::{CustomEventType, CustomTypeChanges};

    /// While every turn is taken, a publish that needs a schema check waits, then is told the
    /// node is busy; one whose types have no schema does not wait at all.
    #[tokio::test]
    async fn schema_checks_take_turns_and_a_publish_past_its_wait_is_busy() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("hookd.db").display());
        let store = Store::connect(&url).await.expect("store");
        let changes = CustomTypeChanges {
            schema: Some(Some(json!({"type": "object", "required": ["sku"]}))),
            ..Default::default()
        };
        let defined = CustomEventType::create("c", "billing.invoiced", "u", changes, 1).unwrap();
        store.insert_event_type(&defined, 10).await.expect("type");
        let catalogue = Catalogue {
            check_wait: Duration::from_millis(50),
            ..Catalogue::new(store)
        };
        let event = |event_type: &str| NewEvent {
            event_type: event_type.into(),
            data: json!({"sku": "a"}),
            ..Default::default()
        };
        let field = |_| String::new();
        assert!(
            catalogue
                .check_events("c", vec![event("billing.invoiced")], field)
                .await
                .is_ok()
        );

        let all = u32::try_from(catalogue.checks.available_permits()).unwrap();
        let _taken = Arc::clone(&catalogue.checks)
            .acquire_many_owned(all)
            .await
            .unwrap();
        let busy = catalogue
            .check_events("c", vec![event("billing.invoiced")], field)
            .await;
        assert!(matches!(busy, Err(CatalogueError::Busy)), "{busy:?}");
        assert!(
            catalogue
                .check_events("c", vec![event("task.completed")], field)
                .await
                .is_ok()
        );
    }
}
