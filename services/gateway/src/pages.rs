//! Printable pages for people, not programs. Today: the subject access page, written for the
//! young person it is about: plain words, what was shared with whom and why, and every
//! record in full. Everything interpolated is escaped; the page loads nothing from anywhere.

use pathway_core::report::QuarterlyReview;
use pathway_core::Agreements;
use serde_json::Value;
use std::fmt::Write;

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The event types in words a young person would use.
fn plain_type(ty: &str) -> &str {
    match ty {
        "young-person.registered" => "You were registered with the exchange",
        "young-person.details-corrected" => "Your details were corrected",
        "looked-after.started" => "You started being looked after",
        "legal-status.changed" => "Your legal status changed",
        "looked-after.ceased" => "You stopped being looked after",
        "placement.changed" => "Where you live changed",
        "worker.allocated" => "A worker was given to you",
        "destination.recorded" => "What you are doing (education, work or training) was recorded",
        "neet.onset" => "You were recorded as not in education, employment or training",
        "enrolment.started" => "You started a course",
        "place.at-risk" => "Your place on a course was at risk",
        "enrolment.ended" => "Your course ended",
        "pathway-plan.reviewed" => "Your pathway plan was reviewed",
        "care-leaver.outcome-recorded" => "A birthday check-in was recorded",
        "meeting.held" => "A meeting was held about you",
        "consent.granted" => "You gave consent to share",
        "consent.withdrawn" => "You withdrew consent",
        "disclosure-override.recorded" => "Information was allowed to be shared without consent",
        "disclosure-override.ended" => "Sharing without consent was stopped",
        "deadline.set" => "A deadline was set",
        "deadline.met" => "A deadline was met",
        "deadline.overdue" => "A deadline was missed",
        "identity.linked" => "Your records at another organisation were linked",
        "young-person.erased" => "Your information was erased",
        "retention.purged" => "An organisation deleted old information about you",
        other => other,
    }
}

fn plain_category(c: &str) -> &str {
    match c {
        "identity" => "your name and details",
        "care" => "being in care",
        "placement" => "where you live",
        "education-employment" => "school, college or work",
        "support" => "who supports you",
        "plans" => "your pathway plan",
        "outcomes" => "how you are getting on",
        "consent" => "your consent choices",
        other => other,
    }
}

struct Page<'a> {
    agreements: &'a Agreements,
    report: &'a Value,
}

impl Page<'_> {
    fn agency(&self, id: &Value) -> String {
        let id = text(id);
        match self.agreements.agency(&id) {
            Some(a) if !a.name.is_empty() => esc(&a.name),
            _ if id == "exchange" => "Pathway Exchange".into(),
            _ => esc(&id),
        }
    }

    /// Why an organisation could see something, in words.
    fn why(&self, basis: &Value) -> String {
        let flow = |b: &Value| {
            self.agreements
                .flow(&text(&b["flow"]))
                .map(|f| format!(" (agreement: {})", esc(&f.purpose)))
                .unwrap_or_default()
        };
        match basis["kind"].as_str() {
            Some("statutory") => format!("The law requires it{}", flow(basis)),
            Some("consent") => format!("You gave consent{}", flow(basis)),
            Some("override") => {
                let id = &basis["override_id"];
                let reason = self.report["held"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|e| &e["id"] == id)
                    .map(|e| text(&e["data"]["basis"]).replace('-', " "))
                    .unwrap_or_else(|| "an exception".into());
                format!(
                    "Shared without consent, because of {}{}",
                    esc(&reason),
                    flow(basis)
                )
            }
            Some("named") => "It was addressed to them".into(),
            Some("owner") => "They are the local authority responsible for you".into(),
            _ => "Unknown".into(),
        }
    }

    fn details(data: &Value, out: &mut String) {
        match data {
            Value::Object(m) if !m.is_empty() => {
                out.push_str("<dl>");
                for (k, v) in m {
                    let _ = write!(out, "<dt>{}</dt><dd>", esc(&k.replace('_', " ")));
                    match v {
                        Value::Object(_) => Self::details(v, out),
                        Value::Array(items) => {
                            let items: Vec<String> = items.iter().map(|i| esc(&text(i))).collect();
                            out.push_str(&items.join(", "));
                        }
                        other => out.push_str(&esc(&text(other))),
                    }
                    out.push_str("</dd>");
                }
                out.push_str("</dl>");
            }
            _ => {}
        }
    }

    fn render(&self) -> String {
        let r = self.report;
        let list = |k: &str| r[k].as_array().cloned().unwrap_or_default();
        let held = list("held");
        let type_of = |seq: &Value| {
            held.iter()
                .find(|e| &e["seq"] == seq)
                .map(|e| plain_type(e["type"].as_str().unwrap_or("")).to_owned())
                .unwrap_or_default()
        };
        let mut o = String::with_capacity(16 << 10);
        let _ = write!(
            o,
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
<title>What Pathway Exchange holds about you</title><style>\
body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.5;color:#111}}\
table{{border-collapse:collapse;width:100%}}th,td{{border:1px solid #999;padding:.3rem .5rem;text-align:left;vertical-align:top}}\
dl{{margin:0}}dt{{font-weight:600}}dd{{margin:0 0 .3rem 1rem}}section{{break-inside:avoid-page}}\
@media print{{body{{margin:0}}a{{color:inherit}}}}</style></head><body>\
<h1>What Pathway Exchange holds about you</h1>\
<p>Produced on {}. Your reference number here is <code>{}</code>.</p>\
<p>Pathway Exchange passes information about you between the organisations that support you. \
This page shows everything it holds about you, who has seen it, and why. \
If anything is wrong, or you want to change what you agreed to share, speak to your personal adviser \
or your local authority.</p>",
            esc(&text(&r["generated_on"])),
            esc(&text(&r["young_person"]))
        );

        o.push_str("<section><h2>Who has seen your information, and why</h2>");
        let shared = list("shared");
        if shared.is_empty() {
            o.push_str("<p>No organisation has been sent information about you.</p>");
        } else {
            o.push_str("<table><thead><tr><th>When</th><th>Who</th><th>What</th><th>Why they could see it</th></tr></thead><tbody>");
            for s in &shared {
                let _ = write!(
                    o,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&text(&s["decided_at"]).chars().take(10).collect::<String>()),
                    self.agency(&s["recipient"]),
                    esc(&type_of(&s["seq"])),
                    self.why(&s["decision"]["basis"])
                );
            }
            o.push_str("</tbody></table>");
        }
        o.push_str("</section>");

        o.push_str("<section><h2>What you have agreed to share</h2>");
        let consents = r["consent"]["in_force"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if consents.is_empty() {
            o.push_str("<p>You have not agreed to share anything at the moment.</p>");
        } else {
            o.push_str("<ul>");
            for c in &consents {
                let _ = write!(
                    o,
                    "<li>{} may see {}</li>",
                    self.agency(&c["recipient"]),
                    esc(plain_category(c["category"].as_str().unwrap_or("")))
                );
            }
            o.push_str("</ul>");
        }
        o.push_str("</section>");

        let overrides = list("overrides");
        if !overrides.is_empty() {
            o.push_str("<section><h2>Sharing without your consent</h2><p>Sometimes the law allows information to be shared without consent, for example to keep someone safe. These are the times it was allowed:</p><ul>");
            for ov in &overrides {
                let who: Vec<String> = ov["recipients"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|a| self.agency(a))
                    .collect();
                let what: Vec<&str> = ov["categories"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| plain_category(c.as_str().unwrap_or("")))
                    .collect();
                let status = if ov["in_force"] == true {
                    format!("allowed until {}", esc(&text(&ov["expires_on"])))
                } else {
                    "no longer allowed".to_owned()
                };
                let _ = write!(
                    o,
                    "<li>{} could see {}: {}</li>",
                    who.join(", "),
                    esc(&what.join(", ")),
                    status
                );
            }
            o.push_str("</ul></section>");
        }

        let withheld = list("withheld");
        if !withheld.is_empty() {
            o.push_str("<section><h2>What was not shared</h2><ul>");
            for w in &withheld {
                let why = match w["decision"]["reason"]["kind"].as_str() {
                    Some("no-consent") => "you had not agreed to it",
                    Some("outside-age") => "you were not in the age range the agreement covers",
                    _ => "no agreement allowed it",
                };
                let _ = write!(
                    o,
                    "<li>{} was not told that: {}, because {}</li>",
                    self.agency(&w["recipient"]),
                    esc(&type_of(&w["seq"])).to_lowercase(),
                    why
                );
            }
            o.push_str("</ul></section>");
        }

        o.push_str("<section><h2>Everything recorded about you</h2>");
        for e in &held {
            let _ = write!(
                o,
                "<h3>{}</h3><p>Recorded by {} on {}.</p>",
                esc(plain_type(e["type"].as_str().unwrap_or(""))),
                self.agency(&e["source"]),
                esc(&text(&e["recorded_at"]).chars().take(10).collect::<String>())
            );
            Self::details(&e["data"], &mut o);
        }
        o.push_str("</section></body></html>");
        o
    }
}

/// The quarterly review as a printable page for the local authority's managers.
pub fn quarterly(agreements: &Agreements, r: &QuarterlyReview) -> String {
    let name = agreements
        .agency(&r.local_authority)
        .map(|a| {
            if a.name.is_empty() {
                a.id.clone()
            } else {
                a.name.clone()
            }
        })
        .unwrap_or_else(|| r.local_authority.clone());
    let o_or = |v: &Option<String>| esc(v.as_deref().unwrap_or("—"));
    let rate = |v: Option<f64>| v.map_or("—".to_owned(), |x| format!("{x:.1}%"));
    let mut o = String::with_capacity(16 << 10);
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">\
<title>Quarterly review {q}</title><style>\
body{{font-family:system-ui,sans-serif;margin:2rem;color:#111}}table{{border-collapse:collapse;margin-bottom:1.5rem}}\
th,td{{border:1px solid #999;padding:.25rem .5rem;text-align:left}}section{{break-inside:avoid-page}}\
@media print{{body{{margin:0}}}}</style></head><body>\
<h1>Quarterly review {q}: {name}</h1><p>{from} to {to}; statuses as of {as_of}. Confidential: \
contains personal data about young people in and leaving care.</p>",
        q = esc(&r.quarter),
        name = esc(&name),
        from = r.from,
        to = r.to,
        as_of = r.as_of.min(r.to),
    );
    o.push_str("<section><h2>Reaching 19 this quarter</h2>");
    if r.turning_19.is_empty() {
        o.push_str("<p>No one.</p>");
    } else {
        o.push_str("<table><tr><th>Name</th><th>19 on</th><th>Care status</th><th>EET</th><th>Activity</th><th>In touch</th><th>Accommodation</th><th>Pathway plan</th></tr>");
        for t in &r.turning_19 {
            let name = format!(
                "{} {}",
                t.given_name.as_deref().unwrap_or(""),
                t.family_name.as_deref().unwrap_or("")
            );
            let name = if name.trim().is_empty() {
                t.young_person.to_string()
            } else {
                name
            };
            let accommodation = match (&t.accommodation, t.accommodation_suitable) {
                (Some(a), Some(true)) => format!("{} (suitable)", esc(a)),
                (Some(a), _) => format!("{} (unsuitable)", esc(a)),
                _ => "—".into(),
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(name.trim()),
                t.turns_19_on,
                t.care_status.map_or("—", |s| s.as_str()),
                t.eet_status,
                o_or(&t.activity_code),
                o_or(&t.in_touch),
                accommodation,
                t.plan.status
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section><section><h2>NEET, and the multi-agency meeting</h2>");
    if r.neet.is_empty() {
        o.push_str("<p>No one is NEET.</p>");
    } else {
        o.push_str("<table><tr><th>Name</th><th>NEET since</th><th>Code</th><th>Meeting due</th><th>Meeting</th></tr>");
        for n in &r.neet {
            let name = format!(
                "{} {}",
                n.given_name.as_deref().unwrap_or(""),
                n.family_name.as_deref().unwrap_or("")
            );
            let name = if name.trim().is_empty() {
                n.young_person.to_string()
            } else {
                name
            };
            let held = n
                .meeting_held_on
                .map(|d| format!(" ({d})"))
                .unwrap_or_default();
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}{}</td></tr>",
                esc(name.trim()),
                n.neet_start_date,
                esc(&n.activity_code),
                n.meeting_due_on,
                n.meeting,
                held
            );
        }
        o.push_str("</table>");
    }
    o.push_str("</section><section><h2>Cohort (counts)</h2><table><tr><th>Age</th><th>Care status</th><th>Young people</th><th>Last quarter</th></tr>");
    let mut keys: std::collections::BTreeSet<(&str, &str)> = std::collections::BTreeSet::new();
    for c in [&r.cohort, &r.cohort_previous_quarter] {
        for (band, statuses) in c {
            keys.extend(statuses.keys().map(|s| (*band, *s)));
        }
    }
    for (band, status) in keys {
        let count =
            |c: &std::collections::BTreeMap<&str, std::collections::BTreeMap<&str, usize>>| {
                c.get(band)
                    .and_then(|s| s.get(status))
                    .copied()
                    .unwrap_or(0)
            };
        let _ = write!(
            o,
            "<tr><td>{band}</td><td>{status}</td><td>{}</td><td>{}</td></tr>",
            count(&r.cohort),
            count(&r.cohort_previous_quarter)
        );
    }
    o.push_str("</table></section><section><h2>Outcomes (birthdays in the year to the quarter's end)</h2><table><tr><th>Age</th><th>Cohort</th><th>In touch</th><th>In education, employment or training</th><th>Suitable accommodation</th></tr>");
    for (band, x) in &r.rates {
        let _ = write!(
            o,
            "<tr><td>{band}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            x.cohort,
            rate(x.in_touch_rate),
            rate(x.eet_rate),
            rate(x.suitable_accommodation_rate)
        );
    }
    let _ = write!(
        o,
        "</table><p>NI 147 (care leavers at 19 in suitable accommodation): {} of {} ({}).<br>\
NI 148 (care leavers at 19 in education, employment or training): {} of {} ({}).</p></section></body></html>",
        r.ni_147.count,
        r.ni_147.cohort,
        rate(r.ni_147.rate),
        r.ni_148.count,
        r.ni_148.cohort,
        rate(r.ni_148.rate)
    );
    o
}

/// The subject access page for a report built by `views::subject_access`.
pub fn subject_access(agreements: &Agreements, report: &Value) -> String {
    Page { agreements, report }.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_in_data_is_shown_not_run() {
        assert_eq!(
            esc("<script>alert('x')</script> & \"q\""),
            "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &quot;q&quot;"
        );
    }
}
