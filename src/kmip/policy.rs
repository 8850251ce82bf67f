//! `--kmip-policy FILE`: which KMIP client (the CN of its certificate's subject) may read,
//! create or change keys in which groups.
//!
//! ```json
//! {"netbackup01": {"read": ["backup"], "create": ["backup"], "change": ["backup"]},
//!  "auditor":     {"read": ["*"], "create": [], "change": []}}
//! ```
//!
//! A client without an entry may do nothing. `default_group` (optional) names the group of a
//! Create or Register that names none (PyKMIP, and many appliances, never send Object Group);
//! it is `kmip` unless given. Without a policy file every client the client CA signed may do
//! everything: the CA is then the whole access control.

use std::collections::HashMap;
use std::path::Path;

use serde::Deserialize;

/// The group of a Create or Register without an Object Group, unless the policy says.
pub const DEFAULT_GROUP: &str = "kmip";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Right {
    /// Get, Get Attributes, Get Attribute List, Locate.
    Read,
    /// Create and Register (and the group they name, if it does not exist).
    Create,
    /// Activate, Revoke, Destroy, Add/Modify/Delete Attribute.
    Change,
}

impl Right {
    pub fn as_str(self) -> &'static str {
        match self {
            Right::Read => "read",
            Right::Create => "create",
            Right::Change => "change",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read the KMIP policy {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the KMIP policy {path} is not valid: {source} (expected {{\"CN\": {{\"read\": [GROUPS], \"create\": [GROUPS], \"change\": [GROUPS]}}}})")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default)]
    read: Vec<String>,
    #[serde(default)]
    create: Vec<String>,
    #[serde(default)]
    change: Vec<String>,
    #[serde(default)]
    default_group: Option<String>,
}

impl Entry {
    fn everything() -> Entry {
        let all = vec!["*".to_string()];
        Entry {
            read: all.clone(),
            create: all.clone(),
            change: all,
            default_group: None,
        }
    }

    /// Whether this client has `right` in the group named `group`.
    pub fn allows(&self, right: Right, group: &str) -> bool {
        let groups = match right {
            Right::Read => &self.read,
            Right::Create => &self.create,
            Right::Change => &self.change,
        };
        groups.iter().any(|g| g == "*" || g == group)
    }

    pub fn default_group(&self) -> &str {
        self.default_group.as_deref().unwrap_or(DEFAULT_GROUP)
    }
}

#[derive(Debug, Clone)]
pub struct Policy {
    /// None: no policy file, every client may do everything.
    clients: Option<HashMap<String, Entry>>,
    everything: Entry,
}

impl Policy {
    pub fn open_to_all() -> Policy {
        Policy {
            clients: None,
            everything: Entry::everything(),
        }
    }

    pub fn parse(text: &str, path: &str) -> Result<Policy, PolicyError> {
        let clients = serde_json::from_str(text).map_err(|source| PolicyError::Parse {
            path: path.to_string(),
            source,
        })?;
        Ok(Policy {
            clients: Some(clients),
            everything: Entry::everything(),
        })
    }

    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: shown.clone(),
            source,
        })?;
        Policy::parse(&text, &shown)
    }

    /// The rights of the client whose certificate's subject CN is `cn`; None: no entry.
    pub fn client(&self, cn: Option<&str>) -> Option<&Entry> {
        match &self.clients {
            None => Some(&self.everything),
            Some(map) => cn.and_then(|cn| map.get(cn)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_name_groups_or_every_group() {
        let p = Policy::parse(
            r#"{"nbu": {"read": ["backup"], "create": ["backup"], "change": []},
                "all": {"read": ["*"], "create": ["*"], "change": ["*"], "default_group": "vm"}}"#,
            "p.json",
        )
        .unwrap();
        let nbu = p.client(Some("nbu")).unwrap();
        assert!(nbu.allows(Right::Read, "backup"));
        assert!(!nbu.allows(Right::Read, "other"));
        assert!(!nbu.allows(Right::Change, "backup"));
        assert_eq!(nbu.default_group(), "kmip");
        let all = p.client(Some("all")).unwrap();
        assert!(all.allows(Right::Change, "anything"));
        assert_eq!(all.default_group(), "vm");
        assert!(p.client(Some("stranger")).is_none());
        assert!(p.client(None).is_none());
        assert!(Policy::open_to_all().client(None).is_some());
    }

    #[test]
    fn refuses_unknown_fields_and_bad_json() {
        for bad in [
            r#"{"a": {"write": ["*"]}}"#,
            r#"{"a": {"read": "*"}}"#,
            "[",
            "",
        ] {
            let e = Policy::parse(bad, "p.json").unwrap_err();
            assert!(e.to_string().contains("p.json"), "{e}");
        }
    }
}
