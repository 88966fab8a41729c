//! A (provider, model) pair a call may go to: what routes resolve to, tiers gate and records
//! name.

/// One (provider, model) a call may go to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub provider: String,
    pub model: String,
}

impl Target {
    /// Parses `provider/model` (the model may itself contain `/`).
    pub fn parse(s: &str) -> Option<Target> {
        let (p, m) = s.split_once('/')?;
        (!p.is_empty() && !m.is_empty()).then(|| Target { provider: p.to_string(), model: m.to_string() })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}
