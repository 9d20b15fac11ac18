#!/usr/bin/env python3
"""Writes schemas/events/<type>.v1.json and schemas/envelope.v1.json from the data standard.

Code-list enums are read from reference/*.csv so that the schemas, the Rust catalogue and the
code lists cannot drift apart silently: `cargo test -p pathway-core` checks all three agree.
Run from the repository root: python3 schemas/generate.py
"""
import csv, json, os, pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
REF = ROOT / "reference"
OUT = ROOT / "schemas" / "events"
BASE = "https://pathway-exchange.example/schemas"


def codes(name, column="code", where=None):
    with open(REF / f"{name}.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return [r[column] for r in rows if where is None or where(r)]


DATE = {"type": "string", "format": "date", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}
AGENCY = {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{0,62}$"}
LA_CODE = {"type": "string", "pattern": "^[0-9]{3}$", "description": "3-digit DfE local authority code"}
NAME = {"type": "string", "minLength": 1, "maxLength": 100}
REF_TEXT = {"type": "string", "minLength": 1, "maxLength": 100, "description": "a reference to a record held by the agency, not free text"}
CATEGORIES = ["identity", "care", "placement", "education-employment", "support", "plans", "outcomes", "consent"]
CATEGORY_LIST = {"type": "array", "items": {"enum": CATEGORIES}, "minItems": 1, "uniqueItems": True}
AGENCY_LIST = {"type": "array", "items": AGENCY, "minItems": 1, "uniqueItems": True}


def enum(values, **extra):
    return {"type": "string", "enum": values, **extra}


IDENTIFIERS = {
    "type": "object",
    "additionalProperties": False,
    "properties": {
        "la_child_id": {"type": "string", "pattern": "^[A-Za-z0-9/-]{1,20}$"},
        "upn": {"type": "string", "pattern": "^[A-Z][0-9]{11}[0-9A-Z]$", "description": "Unique Pupil Number, 13 characters"},
        "uln": {"type": "string", "pattern": "^[1-9][0-9]{9}$", "description": "Unique Learner Number, 10 digits"},
        "nccis_id": {"type": "string", "pattern": "^[0-9]{13}$", "description": "NCCIS YoungPersonsID, 13 digits"},
    },
}
REGISTRATION = {
    "given_name": NAME,
    "family_name": NAME,
    "date_of_birth": DATE,
    "sex": enum(["M", "F", "U"]),
    "identifiers": IDENTIFIERS,
    "responsible_authority": LA_CODE,
}
ACCOMMODATION = [
    letter + suit
    for letter, allowed in zip(codes("oc3-accommodation", "letter"), codes("oc3-accommodation", "suitable_allowed"))
    for suit in (["1", "2"] if allowed == "yes" else ["2"])
]

# type -> (required fields, properties, extra keywords)
TYPES = {
    "young-person.registered": (["date_of_birth", "sex", "identifiers", "responsible_authority"], REGISTRATION, {}),
    "young-person.details-corrected": ([], REGISTRATION, {"minProperties": 1}),
    "looked-after.started": (["start_date", "legal_status"], {
        "start_date": DATE,
        "legal_status": enum(codes("ssda903-legal-status")),
        "category_of_need": enum(codes("ssda903-category-of-need")),
    }, {}),
    "legal-status.changed": (["date", "legal_status"], {
        "date": DATE,
        "legal_status": enum(codes("ssda903-legal-status")),
    }, {}),
    "looked-after.ceased": (["date", "reason"], {
        "date": DATE,
        "reason": enum(codes("ssda903-reason-episode-ceased")),
    }, {}),
    "placement.changed": (["start_date", "placement_type"], {
        "start_date": DATE,
        "placement_type": enum(codes("ssda903-placement-type")),
        "provider": enum(codes("ssda903-placement-provider")),
        "postcode": {"type": "string", "pattern": "^[A-Z]{1,2}[0-9][0-9A-Z]? ?[0-9][A-Z]{2}$"},
        "host_authority": LA_CODE,
        "reason": enum(codes("ssda903-reason-placement-change")),
    }, {}),
    "worker.allocated": (["role", "name", "from_date"], {
        "role": enum(["social-worker", "leaving-care-personal-adviser", "careers-personal-adviser", "named-link", "designated-staff", "designated-teacher"]),
        "name": NAME,
        "team": NAME,
        "email": {"type": "string", "format": "email", "maxLength": 254},
        "phone": {"type": "string", "pattern": "^\\+?[0-9][0-9 ()-]{5,19}$"},
        "from_date": DATE,
    }, {}),
    "destination.recorded": (["activity_code", "start_date", "date_ascertained"], {
        "activity_code": enum(codes("nccis-activity-codes")),
        "start_date": DATE,
        "date_ascertained": DATE,
        "establishment": {
            "type": "object",
            "additionalProperties": False,
            "minProperties": 1,
            "properties": {
                "number": {"type": "string", "pattern": "^[0-9]{4,8}$"},
                "name": {"type": "string", "minLength": 1, "maxLength": 120},
                "ukprn": {"type": "string", "pattern": "^1[0-9]{7}$"},
            },
        },
        "due_to_lapse_date": DATE,
        "period": {"type": "string", "pattern": "^[0-9]{4}-Q[1-4]$"},
    }, {}),
    "neet.onset": (["neet_start_date", "activity_code"], {
        "neet_start_date": DATE,
        "activity_code": enum(codes("nccis-activity-codes", where=lambda r: r["status"] == "neet"), description="an NCCIS code whose status is neet"),
    }, {}),
    "enrolment.started": (["course", "start_date"], {
        "course": {"type": "string", "minLength": 1, "maxLength": 200},
        "level": enum(["entry", "1", "2", "3", "4", "5", "6", "7", "8"]),
        "start_date": DATE,
        "expected_end_date": DATE,
    }, {}),
    "place.at-risk": (["date", "risk"], {
        "date": DATE,
        "risk": enum(["attendance", "behaviour", "finance", "housing", "health", "other"]),
    }, {}),
    "enrolment.ended": (["date", "reason"], {
        "date": DATE,
        "reason": enum(["completed", "withdrawn", "excluded", "transferred"]),
    }, {}),
    "pathway-plan.reviewed": (["review_date", "next_review_due"], {
        "review_date": DATE,
        "next_review_due": DATE,
        "eet_goal": {"type": "string", "minLength": 1, "maxLength": 200},
    }, {}),
    "care-leaver.outcome-recorded": (["birthday_age", "in_touch", "recorded_on"], {
        "birthday_age": {"type": "integer", "minimum": 17, "maximum": 21},
        "in_touch": enum(codes("oc3-in-touch")),
        "activity": enum(codes("oc3-activity")),
        "accommodation": enum(ACCOMMODATION, description="OC3 accommodation letter then 1 (suitable) or 2 (unsuitable)"),
        "recorded_on": DATE,
    }, {}),
    "meeting.held": (["kind", "date", "agencies"], {
        "kind": enum(["neet-multi-agency", "leaving-care-review", "pathway-plan-review", "quarterly-review"]),
        "date": DATE,
        "agencies": AGENCY_LIST,
    }, {}),
    "consent.granted": (["recipients", "categories", "purpose", "given_by", "method", "evidence_ref", "granted_on", "review_due"], {
        "recipients": AGENCY_LIST,
        "categories": CATEGORY_LIST,
        "purpose": {"type": "string", "minLength": 1, "maxLength": 200},
        "given_by": enum(["young-person", "person-with-parental-responsibility"]),
        "method": enum(["written", "verbal-confirmed-in-writing"]),
        "evidence_ref": REF_TEXT,
        "granted_on": DATE,
        "review_due": DATE,
    }, {}),
    "consent.withdrawn": (["recipients", "withdrawn_on", "method", "evidence_ref"], {
        "recipients": AGENCY_LIST,
        "categories": CATEGORY_LIST,
        "withdrawn_on": DATE,
        "method": enum(["written", "verbal-confirmed-in-writing"]),
        "evidence_ref": REF_TEXT,
    }, {}),
    "disclosure-override.recorded": (["basis", "recipients", "categories", "authorised_by", "justification_ref", "expires_on"], {
        "basis": enum(["child-protection", "threat-to-life", "urgent-medical-treatment", "serious-crime", "benefits-eligibility"]),
        "recipients": AGENCY_LIST,
        "categories": CATEGORY_LIST,
        "authorised_by": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "role"],
            "properties": {"name": NAME, "role": NAME},
        },
        "justification_ref": REF_TEXT,
        "expires_on": DATE,
    }, {}),
    "disclosure-override.ended": (["override_id", "date"], {
        "override_id": {"type": "string", "format": "uuid"},
        "date": DATE,
    }, {}),
}

# Events the exchange itself appends (source `exchange`); agencies may not send them.
EXCHANGE_TYPES = {
    "deadline.set": (["rule", "due_on", "trigger_event"], {
        "rule": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,62}$"},
        "due_on": DATE,
        "trigger_event": {"type": "string", "format": "uuid"},
        "alerts": AGENCY_LIST,
    }, {}),
    "deadline.met": (["rule", "due_on", "met_by_event", "met_on"], {
        "rule": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,62}$"},
        "due_on": DATE,
        "met_by_event": {"type": "string", "format": "uuid"},
        "met_on": DATE,
    }, {}),
    "deadline.overdue": (["rule", "due_on"], {
        "rule": {"type": "string", "pattern": "^[a-z0-9][a-z0-9.-]{0,62}$"},
        "due_on": DATE,
        "alerts": AGENCY_LIST,
    }, {}),
    "identity.linked": (["agency", "identifiers", "match"], {
        "agency": AGENCY,
        "identifiers": IDENTIFIERS,
        "match": enum(["exact-identifier", "date-of-birth-and-name", "reviewed"]),
    }, {}),
    "young-person.erased": (["erased_on", "authorised_by"], {
        "erased_on": DATE,
        "authorised_by": AGENCY,
    }, {}),
    # A recipient's copy of what it received on one flow, up to one log position, has passed
    # the flow's retention and is removed from its read model.
    "retention.purged": (["recipients", "flow", "up_to_seq", "retention_days"], {
        "recipients": {**AGENCY_LIST, "maxItems": 1},
        "flow": {"type": "string", "minLength": 1, "maxLength": 100},
        "up_to_seq": {"type": "integer", "minimum": 1},
        "retention_days": {"type": "integer", "minimum": 0},
    }, {}),
}
TYPES.update(EXCHANGE_TYPES)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    for name, (required, props, extra) in TYPES.items():
        schema = {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": f"{BASE}/events/{name}.v1.json",
            "title": f"{name} (version 1): the data of the event",
            "type": "object",
            "additionalProperties": False,
            "required": required,
            "properties": props,
            **extra,
        }
        (OUT / f"{name}.v1.json").write_text(json.dumps(schema, indent=2) + "\n")
    envelope = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"{BASE}/envelope.v1.json",
        "title": "Event envelope as an agency sends it",
        "type": "object",
        "additionalProperties": False,
        "required": ["id", "type", "occurred_at", "data"],
        "properties": {
            "id": {"type": "string", "format": "uuid", "description": "chosen by the sender; the idempotency key"},
            "type": enum(sorted(TYPES)),
            "schema_version": {"type": "integer", "const": 1},
            "young_person": {"type": "string", "format": "uuid"},
            "occurred_at": {"type": "string", "format": "date-time"},
            "expected_version": {"type": "integer", "minimum": 0},
            "signature": {
                "type": "object",
                "additionalProperties": False,
                "required": ["key", "value"],
                "description": "Ed25519 over the canonical JSON of the envelope without this field",
                "properties": {
                    "key": {"type": "string", "pattern": "^[0-9a-f]{64}$", "description": "the public key, hex"},
                    "value": {"type": "string", "pattern": "^[0-9a-f]{128}$", "description": "the signature, hex"},
                },
            },
            "data": {"type": "object"},
        },
    }
    (ROOT / "schemas" / "envelope.v1.json").write_text(json.dumps(envelope, indent=2) + "\n")


if __name__ == "__main__":
    main()
