"""serving's record checks and its OpenAPI schemas are two views of market/schema.py: they agree.

A record the checks accept validates against the OpenAPI schema, and a
record with one field of the wrong kind is refused by both: a field or kind
added to market/schema.py without its check or its schema fails here.
"""
from __future__ import annotations

import jsonschema
import pytest

from market import schema
from serving import openapi, records
from tests.serving.samples import alert, bar

# A value of the wrong kind for each kind. (Not "AAPL\n" for a symbol: the
# schema's `$` is ECMA-262's, which refuses a trailing newline, but Python's
# jsonschema matches it with `re`, whose `$` accepts one.)
WRONG = {
    schema.SYMBOL: "AA PL", schema.EPOCH_MS: 12, schema.EPOCH_MS_OR_NULL: -1, schema.NUMBER: "1.5",
    schema.NUMBER_OR_NULL: "x", schema.NON_NEGATIVE: -1.0, schema.COUNT: -1, schema.PANE_INDEX: 1.5,
    schema.BOOLEAN: 1, schema.PANE: "SOON", schema.TREND: "sideways", schema.ANOMALIES: ["fire"],
    schema.TEXT: "", schema.ALERT_TYPE: "gossip", schema.SEVERITY: "mild",
}
KINDS = set(schema.BAR_FIELD_KINDS.values()) | set(schema.ALERT_FIELD_KINDS.values())


def test_every_kind_has_a_check_a_schema_and_a_wrong_value():
    assert KINDS <= set(records.KIND_CHECKS)
    assert KINDS <= set(openapi.KIND_SCHEMAS)
    assert KINDS <= set(WRONG)


def component(name: str) -> dict:
    return {**openapi.spec({})["components"]["schemas"][name], "components": openapi.spec({})["components"]}


@pytest.mark.parametrize("what, sample, kinds, check", [
    ("Bar", bar, schema.BAR_FIELD_KINDS, records.check_bar),
    ("Alert", alert, schema.ALERT_FIELD_KINDS, records.check_alert),
])
def test_checks_and_openapi_agree_field_by_field(what, sample, kinds, check):
    validator = jsonschema.Draft202012Validator(component(what))
    good = sample()
    check(dict(good))                       # accepted ...
    validator.validate(good)                # ... and described
    for name, kind in kinds.items():
        broken = {**sample(), name: WRONG[kind]}
        with pytest.raises(records.MalformedRecord):
            check(dict(broken))
        assert not validator.is_valid(broken), (name, kind)
