//! What a policy targets: the kinds l3 can tune ([`Kind`]: SMI TrafficSplit, Gateway API
//! HTTPRoute and GRPCRoute, Linkerd's HTTPRoute), the resolved target of a policy ([`Target`]:
//! kind, name and, for a route, which rule), its record on the policy (which target the
//! finalizer restores), and which of the enabled kinds the cluster serves ([`Resources`]).
//!
//! Each kind is one adapter that turns an object into a [`ParsedSplit`] (backends, weights,
//! l3's records and the patches that change only weights): [`trafficsplit`] and [`route`].
//! The engine, the actuator and the restore logic are the same for every kind.

use std::collections::BTreeMap;
use std::fmt;

use kube::api::{ApiResource, DynamicObject};
use kube::discovery::ApiGroup;

use super::crd::{SpecError, TargetGroup, TargetKind, TargetRef};
use super::trafficsplit::{self, ParsedSplit, SplitError, SplitVersion};
use super::{Error, route};

/// A kind of object l3 can tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SMI TrafficSplit (split.smi-spec.io).
    TrafficSplit,
    /// Gateway API HTTPRoute (gateway.networking.k8s.io/v1).
    HttpRoute,
    /// Gateway API GRPCRoute (gateway.networking.k8s.io/v1).
    GrpcRoute,
    /// Linkerd's HTTPRoute (policy.linkerd.io).
    LinkerdHttpRoute,
}

/// The Gateway API group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";
/// Linkerd's policy group.
pub const LINKERD_GROUP: &str = "policy.linkerd.io";

impl Kind {
    /// Every kind, in flag order.
    pub const ALL: [Kind; 4] = [
        Kind::TrafficSplit,
        Kind::HttpRoute,
        Kind::GrpcRoute,
        Kind::LinkerdHttpRoute,
    ];

    /// The API group.
    pub fn group(self) -> &'static str {
        match self {
            Self::TrafficSplit => trafficsplit::GROUP,
            Self::HttpRoute | Self::GrpcRoute => GATEWAY_GROUP,
            Self::LinkerdHttpRoute => LINKERD_GROUP,
        }
    }

    /// The kind's name (`TrafficSplit`, `HTTPRoute`, `GRPCRoute`).
    pub fn kind(self) -> &'static str {
        match self {
            Self::TrafficSplit => "TrafficSplit",
            Self::HttpRoute | Self::LinkerdHttpRoute => "HTTPRoute",
            Self::GrpcRoute => "GRPCRoute",
        }
    }

    /// The resource (plural) name, as RBAC and the audit log spell it.
    pub fn plural(self) -> &'static str {
        match self {
            Self::TrafficSplit => "trafficsplits",
            Self::HttpRoute | Self::LinkerdHttpRoute => "httproutes",
            Self::GrpcRoute => "grpcroutes",
        }
    }

    /// `Kind.group`, the spelling of `--target-kinds` and of records.
    pub fn qualified(self) -> String {
        format!("{}.{}", self.kind(), self.group())
    }

    /// Whether the kind is a route (weights on a rule's backendRefs).
    pub fn is_route(self) -> bool {
        self != Self::TrafficSplit
    }

    /// Read `Kind.group` (as [`Kind::qualified`] spells it).
    pub fn from_qualified(s: &str) -> Option<Kind> {
        Self::ALL.into_iter().find(|k| k.qualified() == s)
    }

    /// What the condition and the log say when the cluster does not serve the kind.
    pub fn missing(self) -> String {
        match self {
            Self::TrafficSplit => trafficsplit::CRD_MISSING.to_owned(),
            Self::HttpRoute | Self::GrpcRoute => format!(
                "the cluster serves no {} {}/v1: install the Gateway API standard CRDs",
                self.kind(),
                GATEWAY_GROUP
            ),
            Self::LinkerdHttpRoute => format!(
                "the cluster serves no HTTPRoute in {LINKERD_GROUP}: install Linkerd's CRDs \
                 (linkerd-crds)"
            ),
        }
    }

    /// What l3 says when the kind is served but not enabled for this l3.
    pub fn disabled(self) -> String {
        format!(
            "{} is not among the target kinds this l3 is enabled for (--target-kinds; the \
             chart's `targets` values)",
            self.qualified()
        )
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::LinkerdHttpRoute => write!(f, "HTTPRoute ({LINKERD_GROUP})"),
            k => f.write_str(k.kind()),
        }
    }
}

/// Which rule of a route a policy tunes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleSelector {
    /// The only rule with two or more backendRefs.
    Default,
    /// The rule with this `name`.
    Name(String),
    /// The rule at this index.
    Index(usize),
}

impl fmt::Display for RuleSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Default => f.write_str("the only rule with two or more backendRefs"),
            Self::Name(n) => write!(f, "the rule named {n:?}"),
            Self::Index(i) => write!(f, "rule {i}"),
        }
    }
}

/// A policy's target, resolved from its `targetRef`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// The kind.
    pub kind: Kind,
    /// The object's name (in the policy's namespace).
    pub name: String,
    /// The rule, for a route ([`RuleSelector::Default`] for a TrafficSplit).
    pub rule: RuleSelector,
}

/// The object a target lives in: what one policy owns and one lock serialises (two policies on
/// two rules of one route would share l3's records on it).
pub type ObjectId = (Kind, String);

impl Target {
    /// A TrafficSplit target.
    pub fn split(name: &str) -> Self {
        Self {
            kind: Kind::TrafficSplit,
            name: name.to_owned(),
            rule: RuleSelector::Default,
        }
    }

    /// Resolve a `targetRef`; the error names the field.
    pub fn from_ref(r: &TargetRef) -> Result<Self, SpecError> {
        let bad = |field: &'static str, message: String| SpecError { field, message };
        let kind = match (r.kind, r.group) {
            (TargetKind::TrafficSplit, None | Some(TargetGroup::Smi)) => Kind::TrafficSplit,
            (TargetKind::HttpRoute, None | Some(TargetGroup::Gateway)) => Kind::HttpRoute,
            (TargetKind::HttpRoute, Some(TargetGroup::Linkerd)) => Kind::LinkerdHttpRoute,
            (TargetKind::GrpcRoute, None | Some(TargetGroup::Gateway)) => Kind::GrpcRoute,
            (kind, Some(group)) => {
                let group = serde_json::to_value(group)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let kind = serde_json::to_value(kind)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                return Err(bad(
                    "targetRef.group",
                    format!(
                        "{group} serves no {kind}: expected split.smi-spec.io for a \
                         TrafficSplit, gateway.networking.k8s.io for an HTTPRoute or GRPCRoute, \
                         or policy.linkerd.io for an HTTPRoute"
                    ),
                ));
            }
        };
        let rule = match (&r.rule_name, r.rule_index) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "targetRef.ruleIndex",
                    "set either ruleName or ruleIndex, not both".into(),
                ));
            }
            (Some(n), None) => RuleSelector::Name(n.clone()),
            (None, Some(i)) => RuleSelector::Index(i as usize),
            (None, None) => RuleSelector::Default,
        };
        if kind == Kind::TrafficSplit && rule != RuleSelector::Default {
            return Err(bad(
                "targetRef.ruleName",
                "a TrafficSplit has no rules: ruleName and ruleIndex are for routes".into(),
            ));
        }
        Ok(Self {
            kind,
            name: r.name.clone(),
            rule,
        })
    }

    /// How the policy records the target it adopted (annotation
    /// [`super::crd::ADOPTED_TARGET_ANNOTATION`]): a TrafficSplit by its bare name (as l3 always
    /// recorded it), a route as `Kind.group/name`, with `?rule=<name>` or `?index=<i>` when a
    /// rule is named.
    pub fn record(&self) -> String {
        if self.kind == Kind::TrafficSplit {
            return self.name.clone();
        }
        let base = format!("{}/{}", self.kind.qualified(), self.name);
        match &self.rule {
            RuleSelector::Default => base,
            RuleSelector::Name(n) => format!("{base}?rule={n}"),
            RuleSelector::Index(i) => format!("{base}?index={i}"),
        }
    }

    /// Read a [`Target::record`]; `None` if it is not one.
    pub fn from_record(s: &str) -> Option<Self> {
        let Some((kind, rest)) = s.split_once('/') else {
            return (!s.is_empty()).then(|| Self::split(s));
        };
        let kind = Kind::from_qualified(kind)?;
        let (name, rule) = match rest.split_once('?') {
            None => (rest, RuleSelector::Default),
            Some((name, q)) => {
                let rule = if let Some(n) = q.strip_prefix("rule=") {
                    RuleSelector::Name(n.to_owned())
                } else {
                    RuleSelector::Index(q.strip_prefix("index=")?.parse().ok()?)
                };
                (name, rule)
            }
        };
        (!name.is_empty()).then(|| Self {
            kind,
            name: name.to_owned(),
            rule,
        })
    }

    /// The object the target lives in.
    pub fn object(&self) -> ObjectId {
        (self.kind, self.name.clone())
    }

    /// Read the target's object through its adapter.
    pub fn parse(&self, obj: &DynamicObject) -> Result<ParsedSplit, SplitError> {
        if self.kind.is_route() {
            route::parse(obj, &self.rule)
        } else {
            trafficsplit::parse(obj)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.name)?;
        match &self.rule {
            RuleSelector::Default => Ok(()),
            r => write!(f, " ({r})"),
        }
    }
}

/// The object id of a record, if it is one.
pub fn object_of(record: &str) -> Option<ObjectId> {
    Target::from_record(record).map(|t| t.object())
}

/// The kinds l3 is enabled for and which of them the cluster serves, with the version used.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Resources {
    /// Enabled kinds: the resource when served, `None` when the CRD is missing.
    pub kinds: BTreeMap<Kind, Option<ApiResource>>,
}

impl Resources {
    /// Only TrafficSplits, served in `version` (tests, benchmarks, `l3 restore`).
    pub fn split(version: SplitVersion) -> Self {
        Self {
            kinds: BTreeMap::from([(Kind::TrafficSplit, Some(version.api_resource()))]),
        }
    }

    /// The resource of an enabled, served kind; otherwise why there is none.
    pub fn resource(&self, kind: Kind) -> Result<&ApiResource, String> {
        match self.kinds.get(&kind) {
            Some(Some(ar)) => Ok(ar),
            Some(None) => Err(kind.missing()),
            None => Err(kind.disabled()),
        }
    }

    /// Enabled kinds the cluster does not serve.
    pub fn missing(&self) -> Vec<Kind> {
        self.kinds
            .iter()
            .filter(|(_, r)| r.is_none())
            .map(|(k, _)| *k)
            .collect()
    }

    /// Enabled kinds the cluster serves, with their resources.
    pub fn served(&self) -> impl Iterator<Item = (Kind, &ApiResource)> {
        self.kinds
            .iter()
            .filter_map(|(k, r)| r.as_ref().map(|r| (*k, r)))
    }
}

/// Ask the API server which of `enabled` it serves, and in which version. A connection failure
/// is reported as such ([`Error::Unreachable`]), never as a missing CRD.
pub async fn discover(client: &kube::Client, enabled: &[Kind]) -> Result<Resources, Error> {
    let mut kinds = BTreeMap::new();
    for &kind in enabled {
        let resource = match kind {
            Kind::TrafficSplit => trafficsplit::discover_version(client)
                .await?
                .map(SplitVersion::api_resource),
            Kind::HttpRoute | Kind::GrpcRoute => served(client, kind, Some("v1")).await?,
            Kind::LinkerdHttpRoute => served(client, kind, None).await?,
        };
        kinds.insert(kind, resource);
    }
    Ok(Resources { kinds })
}

/// The resource of `kind` in `version`, or in the group's preferred version serving it.
async fn served(
    client: &kube::Client,
    kind: Kind,
    version: Option<&str>,
) -> Result<Option<ApiResource>, Error> {
    let group: ApiGroup = match kube::discovery::group(client, kind.group()).await {
        Ok(g) => g,
        Err(kube::Error::Discovery(kube::error::DiscoveryError::MissingApiGroup(_))) => {
            return Ok(None);
        }
        Err(e) => return Err(Error::from_api(e, Error::Discovery)),
    };
    Ok(match version {
        Some(v) => group
            .versioned_resources(v)
            .into_iter()
            .find(|(ar, _)| ar.kind == kind.kind())
            .map(|(ar, _)| ar),
        None => group.recommended_kind(kind.kind()).map(|(ar, _)| ar),
    })
}

/// Parse `--target-kinds` values (`TrafficSplit`, `HTTPRoute`, `GRPCRoute`,
/// `HTTPRoute.policy.linkerd.io`, or any `Kind.group`).
pub fn parse_kinds(values: &[String]) -> Result<Vec<Kind>, String> {
    let mut out = Vec::new();
    for v in values {
        let k = match v.as_str() {
            "TrafficSplit" => Some(Kind::TrafficSplit),
            "HTTPRoute" => Some(Kind::HttpRoute),
            "GRPCRoute" => Some(Kind::GrpcRoute),
            other => Kind::from_qualified(other),
        }
        .ok_or_else(|| {
            format!(
                "{v:?} is not a target kind, expected one of {}",
                Kind::ALL
                    .iter()
                    .map(|k| k.qualified())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(kind: TargetKind, group: Option<TargetGroup>) -> TargetRef {
        TargetRef {
            kind,
            group,
            name: "web".into(),
            rule_name: None,
            rule_index: None,
        }
    }

    #[test]
    fn records_round_trip_and_splits_keep_their_bare_name() {
        for t in [
            Target::split("web"),
            Target {
                kind: Kind::HttpRoute,
                name: "web".into(),
                rule: RuleSelector::Default,
            },
            Target {
                kind: Kind::LinkerdHttpRoute,
                name: "web".into(),
                rule: RuleSelector::Name("canary".into()),
            },
            Target {
                kind: Kind::GrpcRoute,
                name: "web".into(),
                rule: RuleSelector::Index(2),
            },
        ] {
            assert_eq!(Target::from_record(&t.record()), Some(t.clone()), "{t}");
        }
        assert_eq!(Target::split("web").record(), "web");
        assert_eq!(
            Target::from_record("HTTPRoute.gateway.networking.k8s.io/web?index=1").map(|t| t.rule),
            Some(RuleSelector::Index(1))
        );
        assert_eq!(Target::from_record("Nope.example.com/web"), None);
    }

    #[test]
    fn target_refs_resolve_and_bad_ones_name_the_field() {
        let t = Target::from_ref(&r(TargetKind::HttpRoute, None)).unwrap();
        assert_eq!(t.kind, Kind::HttpRoute);
        let t = Target::from_ref(&r(TargetKind::HttpRoute, Some(TargetGroup::Linkerd))).unwrap();
        assert_eq!(t.kind, Kind::LinkerdHttpRoute);
        let e =
            Target::from_ref(&r(TargetKind::GrpcRoute, Some(TargetGroup::Linkerd))).unwrap_err();
        assert_eq!(e.field, "targetRef.group");
        let mut both = r(TargetKind::HttpRoute, None);
        both.rule_name = Some("a".into());
        both.rule_index = Some(0);
        assert_eq!(
            Target::from_ref(&both).unwrap_err().field,
            "targetRef.ruleIndex"
        );
        let mut split_rule = r(TargetKind::TrafficSplit, None);
        split_rule.rule_index = Some(0);
        assert_eq!(
            Target::from_ref(&split_rule).unwrap_err().field,
            "targetRef.ruleName"
        );
    }

    #[test]
    fn kind_flags() {
        assert_eq!(
            parse_kinds(&["TrafficSplit".into(), "HTTPRoute.policy.linkerd.io".into()]).unwrap(),
            vec![Kind::TrafficSplit, Kind::LinkerdHttpRoute]
        );
        assert!(
            parse_kinds(&["Ingress".into()])
                .unwrap_err()
                .contains("GRPCRoute")
        );
    }
}
