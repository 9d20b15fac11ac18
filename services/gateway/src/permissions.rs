//! The permission table: every endpoint, and the roles that may call it. One written table,
//! checked in one place (the `authorize` layer) before any handler runs; a route missing
//! from it is refused to everyone (deny by default). `tests/permissions.rs` walks the whole
//! table, every role against every endpoint.
//!
//! Roles decide which endpoints; agreements and consent still decide which people and which
//! fields, and some handlers also require an agency kind (only a local authority runs the
//! quarterly review).
//!
//! NATS has one principal per agency, its own system (the `service` role here): the broker's
//! user for the agency may use only that agency's subjects (`pathway_nats::broker`, tested
//! against a real nats-server in `tests/e2e/nats.rs`).

use crate::auth::Role;
use Role::{
    AgencyAdmin as AA, DesignatedStaff as DS, MiOfficer as MI, PersonalAdviser as PA, Service as SV,
};

pub struct Rule {
    pub method: &'static str,
    pub path: &'static str,
    pub roles: &'static [Role],
}

const fn rule(method: &'static str, path: &'static str, roles: &'static [Role]) -> Rule {
    Rule {
        method,
        path,
        roles,
    }
}

/// Open to anyone: liveness and readiness carry no data.
pub const PUBLIC: &[(&str, &str)] = &[("GET", "/healthz"), ("GET", "/readyz")];

pub const TABLE: &[Rule] = &[
    rule("POST", "/v1/events", &[SV, MI, PA, DS, AA]),
    rule("GET", "/v1/feed", &[SV, MI, PA, DS, AA]),
    rule("GET", "/v1/feed/stream", &[SV, MI, PA, DS, AA]),
    rule("GET", "/v1/young-people", &[SV, MI, PA, DS, AA]),
    rule("GET", "/v1/young-people/{id}", &[SV, MI, PA, DS, AA]),
    rule("GET", "/v1/young-people/{id}/subject-access", &[SV, MI, AA]),
    rule("GET", "/v1/disclosures", &[SV, MI, PA, DS, AA]),
    rule("GET", "/v1/consent/review", &[SV, MI, PA, DS, AA]),
    rule("GET", "/v1/reports/quarterly", &[SV, MI, PA, AA]),
    rule("POST", "/v1/imports/looked-after", &[SV, MI, AA]),
    rule("POST", "/v1/imports/destinations", &[SV, MI, AA]),
    rule("GET", "/v1/identity/review", &[SV, MI, AA]),
    rule("POST", "/v1/identity/review", &[SV, MI, AA]),
    rule("GET", "/v1/exports/destinations", &[SV, MI, AA]),
    rule("GET", "/v1/exports/looked-after", &[SV, MI, AA]),
    rule("POST", "/v1/webhooks", &[SV, DS, AA]),
    rule("GET", "/v1/webhooks", &[SV, DS, AA]),
    rule("DELETE", "/v1/webhooks/{id}", &[SV, DS, AA]),
    rule("GET", "/v1/webhooks/dead-letters", &[SV, DS, AA]),
    rule("POST", "/v1/young-people/{id}/erase", &[Role::Admin]),
];

pub fn is_public(method: &str, path: &str) -> bool {
    PUBLIC.iter().any(|(m, p)| *m == method && *p == path)
}

/// Whether `role` may call `method path` (the route's pattern, as the router matched it).
pub fn permitted(method: &str, path: &str, role: Role) -> bool {
    TABLE
        .iter()
        .any(|r| r.method == method && r.path == path && r.roles.contains(&role))
}
