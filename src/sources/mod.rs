//! Ways events come in besides the API: a node reads them from a message bus and publishes each
//! as `POST /api/events` would, as the tenant the source is configured for. A source is another
//! front door beside the API, so it takes the API's request body and gets the API's answer: what
//! the API would refuse (any 4xx) a source refuses for good, and what the API would answer 503 a
//! source tries again later.

pub mod nats;
