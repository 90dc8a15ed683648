//! [`Fleet`]: sharing circuit state with the other replicas of an application over Redis.

use std::fmt;
use std::time::Duration;

use super::check;
use crate::error::{ConfigError, Scope};

/// The longest namespace accepted, in bytes.
pub const MAX_NAMESPACE_LEN: usize = 64;

/// The longest replica name accepted, in bytes.
pub const MAX_REPLICA_LEN: usize = 128;

/// Replicas of one application sharing their circuits' state changes through one Redis
/// (feature `redis`; the link itself is `fusebox::fleet`).
///
/// Give it to `SupervisorBuilder::fleet`, or write a `[fleet]` table in the TOML
/// configuration. Every replica naming the same Redis and the same
/// [namespace](Self::namespace) is one fleet: when one of them opens, isolates, resets or
/// closes a provider's circuit, the others apply the change within milliseconds, and a
/// recovering provider receives one half-open trial from the whole fleet. Calls never wait
/// for Redis, and a replica that cannot reach it keeps deciding alone.
///
/// ```
/// use std::time::Duration;
/// use fusebox::fleet::Fleet;
///
/// let fleet = Fleet::redis("redis://127.0.0.1:6379/")
///     .namespace("prod")
///     .resync_every(Duration::from_secs(1));
/// assert_eq!(fleet.namespace_name(), "prod");
/// ```
///
/// Only `redis://` and `redis+unix://` (or `unix://`) URLs are accepted: fusebox links no TLS
/// stack, so `rediss://` is refused by the validation.
#[derive(Clone, PartialEq, Eq)]
pub struct Fleet {
    pub(crate) url: String,
    pub(crate) namespace: String,
    pub(crate) resync_every: Duration,
    pub(crate) trial_lease: Duration,
    pub(crate) lease_wait: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) replica: Option<String>,
}

/// The URL's password is shown as `***`.
impl fmt::Debug for Fleet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fleet")
            .field("url", &redacted(&self.url))
            .field("namespace", &self.namespace)
            .field("resync_every", &self.resync_every)
            .field("trial_lease", &self.trial_lease)
            .field("lease_wait", &self.lease_wait)
            .field("connect_timeout", &self.connect_timeout)
            .field("replica", &self.replica)
            .finish()
    }
}

/// `url` with the password of its user-info (if any) replaced by `***`.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split_once(':').map_or(userinfo, |(user, _)| user);
            format!("{scheme}://{user}:***@{host}{path}")
        }
        None => url.to_owned(),
    }
}

impl Fleet {
    /// A fleet linked through the Redis at `url` (`redis://host:port/db`), in the namespace
    /// `default`.
    pub fn redis(url: impl Into<String>) -> Fleet {
        Fleet {
            url: url.into(),
            namespace: "default".to_owned(),
            resync_every: Duration::from_secs(1),
            trial_lease: Duration::from_secs(10),
            lease_wait: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            replica: None,
        }
    }

    /// The namespace: replicas share state only with replicas of the same namespace (one
    /// Redis can serve several fleets). Letters, digits and `-_.:` only, at most
    /// [`MAX_NAMESPACE_LEN`] bytes.
    ///
    /// Defaults to `default`.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Fleet {
        self.namespace = namespace.into();
        self
    }

    /// How often every replica re-reads every provider's record, because pub/sub delivers
    /// at most once: a message lost in transit is repaired within this period. It also
    /// re-reads on every reconnect.
    ///
    /// Defaults to 1 second.
    pub fn resync_every(mut self, every: Duration) -> Fleet {
        self.resync_every = every;
        self
    }

    /// The longest a replica holds the fleet's half-open trial lease for one provider (it
    /// holds it at most for the provider's trial timeout, and gives it back as soon as its
    /// trial decides). Another replica's trial waits for it at most this long if the
    /// holder disappears mid-trial.
    ///
    /// Defaults to 10 seconds.
    pub fn trial_lease(mut self, lease: Duration) -> Fleet {
        self.trial_lease = lease;
        self
    }

    /// How long a half-open trial waits for Redis to answer its lease request before it
    /// runs as a lone replica's trial would. Only trials wait; calls on a closed circuit
    /// never touch the network.
    ///
    /// Defaults to 100 milliseconds.
    pub fn lease_wait(mut self, wait: Duration) -> Fleet {
        self.lease_wait = wait;
        self
    }

    /// How long a connection attempt, or one Redis command of the link, may take before the
    /// link counts Redis as unreachable (and keeps deciding locally). Building the
    /// supervisor waits at most this long for the first connection.
    ///
    /// Defaults to 1 second.
    pub fn connect_timeout(mut self, timeout: Duration) -> Fleet {
        self.connect_timeout = timeout;
        self
    }

    /// This replica's name in the records it writes (for operators reading Redis, and so
    /// that a replica recognises its own writes). At most [`MAX_REPLICA_LEN`] bytes.
    ///
    /// Defaults to a random name chosen when the supervisor starts.
    pub fn replica(mut self, name: impl Into<String>) -> Fleet {
        self.replica = Some(name.into());
        self
    }

    /// The Redis URL, its password shown as `***`.
    pub fn url(&self) -> String {
        redacted(&self.url)
    }

    /// The namespace.
    pub fn namespace_name(&self) -> &str {
        &self.namespace
    }

    /// The resync period.
    pub fn resync_period(&self) -> Duration {
        self.resync_every
    }

    /// Checks every setting.
    ///
    /// # Errors
    ///
    /// A [`ConfigError`] naming the field (`fleet.url`, `fleet.namespace`, ...).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let top = Scope::Supervisor;
        let scheme = self.url.split_once("://").map(|(s, _)| s);
        match scheme {
            Some("redis" | "redis+unix" | "unix") => {}
            Some("rediss" | "valkeys") => {
                return Err(ConfigError::invalid(
                    &top,
                    "fleet.url",
                    self.url(),
                    "TLS (rediss://) is not supported: fusebox links no TLS stack",
                ))
            }
            _ => {
                return Err(ConfigError::invalid(
                    &top,
                    "fleet.url",
                    self.url(),
                    "expected a redis:// or redis+unix:// URL",
                ))
            }
        }
        let ns = &self.namespace;
        if ns.is_empty()
            || ns.len() > MAX_NAMESPACE_LEN
            || !ns
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
        {
            return Err(ConfigError::invalid(
                &top,
                "fleet.namespace",
                format!("{ns:?}"),
                "must be 1 to 64 letters, digits or -_.:",
            ));
        }
        if let Some(replica) = &self.replica {
            if replica.is_empty()
                || replica.len() > MAX_REPLICA_LEN
                || replica.chars().any(char::is_control)
            {
                return Err(ConfigError::invalid(
                    &top,
                    "fleet.replica",
                    format!("{replica:?}"),
                    "must be 1 to 128 bytes without control characters",
                ));
            }
        }
        check::nonzero(&top, "fleet.resync_every", self.resync_every)?;
        check::nonzero(&top, "fleet.trial_lease", self.trial_lease)?;
        check::nonzero(&top, "fleet.lease_wait", self.lease_wait)?;
        check::nonzero(&top, "fleet.connect_timeout", self.connect_timeout)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redacted("redis://user:secret@127.0.0.1:6379/0"),
            "redis://user:***@127.0.0.1:6379/0"
        );
        assert_eq!(redacted("redis://:secret@host/"), "redis://:***@host/");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        assert!(!format!("{:?}", Fleet::redis("redis://:pw@h/")).contains("pw"));
    }

    #[test]
    fn bad_settings_name_their_field() {
        let field = |f: Fleet| f.validate().unwrap_err().field().map(str::to_owned);
        assert_eq!(
            field(Fleet::redis("rediss://h/")).as_deref(),
            Some("fleet.url")
        );
        assert_eq!(
            field(Fleet::redis("http://h/")).as_deref(),
            Some("fleet.url")
        );
        let ok = Fleet::redis("redis://127.0.0.1/");
        assert!(ok.validate().is_ok());
        assert_eq!(
            field(ok.clone().namespace("a b")).as_deref(),
            Some("fleet.namespace")
        );
        assert_eq!(
            field(ok.clone().namespace("")).as_deref(),
            Some("fleet.namespace")
        );
        assert_eq!(
            field(ok.clone().resync_every(Duration::ZERO)).as_deref(),
            Some("fleet.resync_every")
        );
        assert_eq!(
            field(ok.clone().replica("")).as_deref(),
            Some("fleet.replica")
        );
        assert_eq!(
            field(ok.lease_wait(Duration::ZERO)).as_deref(),
            Some("fleet.lease_wait")
        );
    }
}
