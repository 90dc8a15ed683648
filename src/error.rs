//! The errors fusebox returns.

use std::path::PathBuf;

/// Where in a configuration a bad value sits.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Scope {
    /// A setting of the whole supervisor.
    Supervisor,
    /// A setting of the named provider.
    Provider(String),
    /// A setting of the named route.
    Route(String),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Scope::Supervisor => f.write_str("supervisor"),
            Scope::Provider(name) => write!(f, "provider `{name}`"),
            Scope::Route(name) => write!(f, "route `{name}`"),
        }
    }
}

/// A configuration that cannot be used, with what is wrong and where.
///
/// Every variant names the offending field or item; errors found in a TOML document also
/// carry its line (see [`ConfigError::At`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A field holds a value outside its allowed range.
    #[error("{scope}: {field} = {value}: {reason}")]
    InvalidValue {
        /// The provider, route or supervisor the field belongs to.
        scope: Scope,
        /// The field, as named in the TOML format (`breaker.failure_rate`).
        field: &'static str,
        /// The rejected value, as written.
        value: String,
        /// What the value must be.
        reason: &'static str,
    },
    /// A provider or route was given an empty name.
    #[error("{kind} name must not be empty")]
    EmptyName {
        /// `"provider"` or `"route"`.
        kind: &'static str,
    },
    /// Two providers share a name.
    #[error("provider `{0}` is defined twice")]
    DuplicateProvider(String),
    /// Two routes share a name.
    #[error("route `{0}` is defined twice")]
    DuplicateRoute(String),
    /// A supervisor needs at least one provider.
    #[error("no providers configured")]
    NoProviders,
    /// A route lists no providers.
    #[error("route `{0}` lists no providers")]
    EmptyRoute(String),
    /// A route names a provider that is not configured.
    #[error("route `{route}` names unknown provider `{provider}`")]
    UnknownProvider {
        /// The route.
        route: String,
        /// The name it lists that matches no provider.
        provider: String,
    },
    /// A route lists the same provider twice.
    #[error("route `{route}` lists provider `{provider}` twice")]
    DuplicateRouteProvider {
        /// The route.
        route: String,
        /// The provider listed more than once.
        provider: String,
    },
    /// A TOML document is malformed or has a field of the wrong type or an unknown field.
    #[error("TOML line {line}, column {column}: {message}")]
    Toml {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// The parser's description.
        message: String,
    },
    /// A value in a TOML document was well-formed but rejected; `line` locates it.
    #[error("TOML line {line}: {error}")]
    At {
        /// 1-based line of the rejected value.
        line: usize,
        /// What is wrong with it.
        error: Box<ConfigError>,
    },
    /// A configuration file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
}

impl ConfigError {
    pub(crate) fn invalid(
        scope: &Scope,
        field: &'static str,
        value: impl std::fmt::Display,
        reason: &'static str,
    ) -> Self {
        ConfigError::InvalidValue {
            scope: scope.clone(),
            field,
            value: value.to_string(),
            reason,
        }
    }

    /// The field this error names, if it is about one field's value (looks through
    /// [`ConfigError::At`]).
    pub fn field(&self) -> Option<&'static str> {
        match self {
            ConfigError::InvalidValue { field, .. } => Some(field),
            ConfigError::At { error, .. } => error.field(),
            _ => None,
        }
    }

    /// The TOML line this error points at, if it came from a TOML document.
    pub fn line(&self) -> Option<usize> {
        match self {
            ConfigError::Toml { line, .. } | ConfigError::At { line, .. } => Some(*line),
            _ => None,
        }
    }
}
