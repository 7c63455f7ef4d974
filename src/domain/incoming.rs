//! Incoming webhooks: a secret URL that outside systems post to, and the rules for its settings.

use serde_json::Value;

use super::{
    Invalid,
    net::IpAllowlist,
    outgoing::{check_range, check_text},
    template::Template,
    tenant::Tenant,
};

/// The spec's limit: 100 requests per minute per webhook unless configured.
pub const DEFAULT_RATE_LIMIT: i64 = 100;

#[derive(Debug, Clone)]
pub struct IncomingWebhook {
    pub id: String,
    pub tenant: Tenant,
    /// The secret path segment of the receiving URL. Shown to its owner (like a Slack incoming
    /// webhook URL); looked up by its hash.
    pub token: String,
    pub settings: IncomingSettings,
    pub created_at: i64,
    pub updated_at: i64,
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
        if let Some(transform) = &self.transform {
            transform.compile()?;
        }
        Ok(())
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
