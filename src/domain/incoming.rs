//! Incoming webhooks: a secret URL that outside systems post to, and the rules for its settings.

use serde_json::Value;

use super::{
    Invalid, check_range, check_text,
    net::IpAllowlist,
    rotation::PreviousSecret,
    signature::{SourceVerification, VerifyError},
    template::{Condition, Template},
    tenant::Tenant,
};

/// The spec's limit: 100 requests per minute per webhook unless configured.
pub const DEFAULT_RATE_LIMIT: i64 = 100;
/// More rules than this is a sign of a design problem, and each costs a render per request.
const MAX_ROUTES: usize = 50;

#[derive(Debug, Clone)]
pub struct IncomingWebhook {
    pub id: String,
    pub tenant: Tenant,
    /// The secret path segment of the receiving URL. Shown to its owner (like a Slack incoming
    /// webhook URL); looked up by its hash.
    pub token: String,
    pub settings: IncomingSettings,
    /// The verification secret a rotation replaced, still accepted until it expires.
    pub previous_secret: Option<PreviousSecret>,
    pub created_at: i64,
    pub updated_at: i64,
}

impl IncomingWebhook {
    /// Checks a request's source signature at `now` (unix ms) with the current secret, or with
    /// the one a rotation replaced while it is still valid. `Ok` when there is nothing to check.
    pub fn verify_source(
        &self,
        headers: &http::HeaderMap,
        body: &[u8],
        now: i64,
    ) -> Result<(), VerifyError> {
        let Some(verification) = &self.settings.verification else {
            return Ok(());
        };
        let previous = PreviousSecret::live(self.previous_secret.as_ref(), now);
        verification.verify_rotating(
            previous.map(|p| p.secret.as_str()),
            headers,
            body,
            now / 1_000,
        )
    }
}

/// How a payload is reshaped before it reaches the agent.
#[derive(Debug, Clone, PartialEq)]
pub enum Transform {
    /// `transform_template`: one Jinja2 template; output that parses as JSON becomes JSON.
    Text(String),
    /// `payload_transformation` (or an object given as `transform_template`, as the spec's
    /// "Payload Transformation Templates" example does): every string leaf is a template.
    Object(Value),
}

impl Transform {
    pub fn compile(&self) -> Result<Template, Invalid> {
        match self {
            Transform::Text(source) => Template::compile_text(source)
                .map_err(|e| Invalid::new("transform_template", e.to_string())),
            Transform::Object(source) => Template::compile_object(source).map_err(|e| {
                let field = match &e.path {
                    Some(path) => format!("payload_transformation.{path}"),
                    None => "payload_transformation".into(),
                };
                let line = e.line.map(|l| format!("line {l}: ")).unwrap_or_default();
                Invalid::new(field, format!("{line}{}", e.message))
            }),
        }
    }
}

/// A routing rule: when the Jinja expression `when` is truthy over the request's context, the
/// message goes to `agent` (an agent id or name, see [`crate::domain::agent`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Route {
    pub when: String,
    pub agent: String,
}

/// The compiled form of the settings a request needs: built once per version of a webhook.
#[derive(Debug, Clone)]
pub struct CompiledIncoming {
    pub template: Option<Template>,
    /// The rules in order, each with the agent it routes to.
    pub routes: Vec<(Condition, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct IncomingSettings {
    pub name: String,
    pub agent_id: Option<String>,
    pub agent_name: Option<String>,
    pub description: Option<String>,
    pub is_active: bool,
    pub transform: Option<Transform>,
    pub rate_limit: i64,
    pub allowed_ips: IpAllowlist,
    /// How requests prove they come from the source (GitHub, Stripe, …); `None`: the URL alone.
    pub verification: Option<SourceVerification>,
    /// Routing rules, first match wins; none matching: the webhook's own agent.
    pub routes: Vec<Route>,
    /// A header carrying the provider's delivery id (`X-GitHub-Delivery`, `webhook-id`): a
    /// request repeating an id already accepted is answered with the first answer.
    pub dedup_header: Option<String>,
}

/// A set of changes: `None` leaves a field as it is; for nullable fields `Some(None)` clears it.
#[derive(Debug, Clone, Default)]
pub struct IncomingChanges {
    pub name: Option<String>,
    pub agent_id: Option<Option<String>>,
    pub agent_name: Option<Option<String>>,
    pub description: Option<Option<String>>,
    pub is_active: Option<bool>,
    pub transform: Option<Option<Transform>>,
    pub rate_limit: Option<i64>,
    pub allowed_ips: Option<Vec<String>>,
    pub verification: Option<Option<SourceVerification>>,
    pub routes: Option<Vec<Route>>,
    pub dedup_header: Option<Option<String>>,
}

impl IncomingSettings {
    pub fn create(changes: IncomingChanges) -> Result<Self, Invalid> {
        let name = changes
            .name
            .clone()
            .ok_or_else(|| Invalid::new("name", "is required"))?;
        let defaults = IncomingSettings {
            name,
            agent_id: None,
            agent_name: None,
            description: None,
            is_active: true,
            transform: None,
            rate_limit: DEFAULT_RATE_LIMIT,
            allowed_ips: IpAllowlist::default(),
            verification: None,
            routes: Vec::new(),
            dedup_header: None,
        };
        defaults.apply(changes)
    }

    pub fn apply(&self, changes: IncomingChanges) -> Result<Self, Invalid> {
        let mut next = self.clone();
        if let Some(name) = changes.name {
            next.name = name;
        }
        if let Some(agent_id) = changes.agent_id {
            next.agent_id = agent_id;
        }
        if let Some(agent_name) = changes.agent_name {
            next.agent_name = agent_name;
        }
        if let Some(description) = changes.description {
            next.description = description;
        }
        if let Some(is_active) = changes.is_active {
            next.is_active = is_active;
        }
        if let Some(transform) = changes.transform {
            next.transform = transform;
        }
        if let Some(rate_limit) = changes.rate_limit {
            next.rate_limit = rate_limit;
        }
        if let Some(verification) = changes.verification {
            next.verification = verification;
        }
        if let Some(routes) = changes.routes {
            next.routes = routes;
        }
        if let Some(dedup_header) = changes.dedup_header {
            next.dedup_header = dedup_header;
        }
        if let Some(entries) = changes.allowed_ips {
            next.allowed_ips = IpAllowlist::parse(&entries)
                .map_err(|e| Invalid::new("allowed_ips", e.to_string()))?;
        }
        next.validate()?;
        Ok(next)
    }

    fn validate(&self) -> Result<(), Invalid> {
        check_text("name", &self.name, 1, 200)?;
        if let Some(description) = &self.description {
            check_text("description", description, 0, 2_000)?;
        }
        for (field, value) in [
            ("agent_id", &self.agent_id),
            ("agent_name", &self.agent_name),
        ] {
            if let Some(value) = value {
                check_text(field, value, 1, 200)?;
            }
        }
        if self.agent_id.is_none() && self.agent_name.is_none() {
            return Err(Invalid::new("agent_id", "is required (or give agent_name)"));
        }
        check_range("rate_limit", self.rate_limit, 1, 1_000_000)?;
        if let Some(verification) = &self.verification {
            verification
                .validate()
                .map_err(|e| Invalid::new("verification", e.to_string()))?;
        }
        if let Some(name) = &self.dedup_header
            && http::HeaderName::from_bytes(name.as_bytes()).is_err()
        {
            return Err(Invalid::new(
                "dedup_header",
                "is not a valid HTTP header name",
            ));
        }
        if self.routes.len() > MAX_ROUTES {
            return Err(Invalid::new(
                "routes",
                format!("at most {MAX_ROUTES} rules"),
            ));
        }
        for (i, route) in self.routes.iter().enumerate() {
            check_text(&format!("routes[{i}].agent_id"), &route.agent, 1, 200)?;
        }
        self.compile().map(drop)
    }

    /// The agent that gets what no rule routes elsewhere: `agent_id`, else `agent_name`.
    pub fn fallback_agent(&self) -> &str {
        // validate() guarantees one of the two.
        self.agent_id
            .as_deref()
            .or(self.agent_name.as_deref())
            .unwrap_or_default()
    }

    /// Every agent these settings may route to, the fallback first.
    pub fn agents(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.fallback_agent()).chain(self.routes.iter().map(|r| r.agent.as_str()))
    }

    /// Compiles the template and the routing rules; errors name the field and the line.
    pub fn compile(&self) -> Result<CompiledIncoming, Invalid> {
        let template = self
            .transform
            .as_ref()
            .map(Transform::compile)
            .transpose()?;
        let routes = self
            .routes
            .iter()
            .enumerate()
            .map(|(i, route)| {
                Template::compile_condition(&route.when)
                    .map(|condition| (condition, route.agent.clone()))
                    .map_err(|e| Invalid::new(format!("routes[{i}].when"), e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        Ok(CompiledIncoming { template, routes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn named() -> IncomingChanges {
        IncomingChanges {
            name: Some("crm".into()),
            agent_id: Some(Some("sales_agent".into())),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_follow_the_spec() {
        let s = IncomingSettings::create(named()).unwrap();
        assert_eq!(s.rate_limit, 100);
        assert!(s.is_active);
        assert!(s.allowed_ips.is_empty());
    }

    #[test]
    fn bad_template_names_field_and_line() {
        let err = IncomingSettings::create(IncomingChanges {
            transform: Some(Some(Transform::Text("ok\n{{ data.x ".into()))),
            ..named()
        })
        .unwrap_err();
        assert_eq!(err.field, "transform_template");
        assert!(err.message.contains("line 2"), "{}", err.message);

        let err = IncomingSettings::create(IncomingChanges {
            transform: Some(Some(Transform::Object(
                json!({"context": {"email": "{{ email"}}),
            ))),
            ..named()
        })
        .unwrap_err();
        assert_eq!(err.field, "payload_transformation.context.email");
    }

    #[test]
    fn bad_route_names_its_index_and_line() {
        let route = |when: &str| Route {
            when: when.into(),
            agent: "a".into(),
        };
        let err = IncomingSettings::create(IncomingChanges {
            routes: Some(vec![route("priority == 'high'"), route("labels contains")]),
            ..named()
        })
        .unwrap_err();
        assert_eq!(err.field, "routes[1].when");
        assert!(err.message.contains("line 1"), "{}", err.message);
        let ok = IncomingSettings::create(IncomingChanges {
            routes: Some(vec![route("labels contains 'urgent'")]),
            ..named()
        })
        .unwrap();
        assert_eq!(ok.agents().collect::<Vec<_>>(), ["sales_agent", "a"]);
    }

    #[test]
    fn bad_cidr_is_refused() {
        let err = IncomingSettings::create(IncomingChanges {
            allowed_ips: Some(vec!["10.0.0.0/8".into(), "10.0.0.0/33".into()]),
            ..named()
        })
        .unwrap_err();
        assert_eq!(err.field, "allowed_ips");
        assert!(err.message.contains("10.0.0.0/33"));
    }
}
