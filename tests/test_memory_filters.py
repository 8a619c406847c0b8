"""Filter parsing and validation: data only, nothing evaluated as code."""

from __future__ import annotations

import pytest

from connectors._postgres_filters import to_postgres
from kernel.errors import FilterError
from kernel.memory import And, Condition, Or, parse_expression, parse_expressions, parse_filter, to_dict


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("source=a.md", Condition("source", "eq", "a.md")),
        ("source == a.md", Condition("source", "eq", "a.md")),
        ("source!=a.md", Condition("source", "ne", "a.md")),
        ("year>=2020", Condition("year", "gte", 2020)),
        ("year>2020", Condition("year", "gt", 2020)),
        ("year<=2020.5", Condition("year", "lte", 2020.5)),
        ("year<2020", Condition("year", "lt", 2020)),
        ("tag in a,b, c", Condition("tag", "in", ("a", "b", "c"))),
        ("tag IN 1,2", Condition("tag", "in", (1, 2))),
        ("tag not in a,b", Condition("tag", "nin", ("a", "b"))),
        ("tag nin a", Condition("tag", "nin", ("a",))),
        ("tags contains py", Condition("tags", "contains", "py")),
        ("draft=true", Condition("draft", "eq", True)),
        ("x=null", Condition("x", "eq", None)),
        ('year="2020"', Condition("year", "eq", "2020")),
        ("title='a=b'", Condition("title", "eq", "a=b")),
        ("info.lang=fr", Condition("info.lang", "eq", "fr")),
        ("url=http://x/?a=b", Condition("url", "eq", "http://x/?a=b")),
    ],
)
def test_cli_expressions(text: str, expected: Condition) -> None:
    assert parse_expression(text) == expected


def test_several_expressions_are_anded_and_json_is_accepted() -> None:
    f = parse_expressions(["year>=2020", '{"or": [{"field": "a", "op": "eq", "value": 1}]}'])
    assert f == And((Condition("year", "gte", 2020), Or((Condition("a", "eq", 1),))))
    assert parse_expressions([]) is None
    assert parse_filter(None) is None


def test_dict_round_trip() -> None:
    spec = {"and": [{"field": "a", "op": "in", "value": [1, 2]}, {"or": [{"field": "b", "op": "ne", "value": "x"}]}]}
    assert to_dict(parse_filter(spec)) == spec  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"field": "a", "op": "like", "value": "x"}, "unknown filter operator 'like' on field 'a'"),
        ({"field": "a b", "op": "eq", "value": 1}, "invalid filter field 'a b'"),
        ({"field": "1abc", "op": "eq", "value": 1}, "invalid filter field"),
        ({"field": "a..b", "op": "eq", "value": 1}, "invalid filter field"),
        ({"field": "__import__('os')", "op": "eq", "value": 1}, "invalid filter field"),
        ({"field": "a", "op": "in", "value": "abc"}, "needs a list of values"),
        ({"field": "a", "op": "in", "value": [[1]]}, "scalar list items"),
        ({"field": "a", "op": "gt", "value": True}, "a number or a string"),
        ({"field": "a", "op": "eq", "value": {"x": 1}}, "a scalar value"),
        ({"and": []}, "non-empty list"),
        ({"and": {"field": "a"}}, "non-empty list"),
        ({"source": "a.md"}, "unrecognised filter"),
        ({"field": "a", "op": "eq"}, "unrecognised filter"),
        ("no operator here", "cannot parse filter expression 'no operator here'"),
        ("=value", "cannot parse"),
        ("{not json", "invalid JSON filter"),
        (42, "unsupported filter of type int"),
    ],
)
def test_invalid_filters_name_the_problem(spec: object, message: str) -> None:
    with pytest.raises(FilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_filter(spec)  # type: ignore[arg-type]


def test_postgres_compilation_binds_every_value_and_path() -> None:
    evil = "x'); DROP TABLE records; --"
    sql, params = to_postgres(parse_filter({"or": [{"field": "a.b", "op": "eq", "value": evil}, "n>=3"]}))
    assert evil not in sql and "DROP" not in sql and "a.b" not in sql
    assert '"x\'); DROP TABLE records; --"' in params  # JSON-encoded, bound
    assert ["a", "b"] in params and 3 in params
    assert sql.count("%s") == len(params)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("title=Life in Rome", Condition("title", "eq", "Life in Rome")),
        ("note!=a contains b", Condition("note", "ne", "a contains b")),
        ("tags contains in", Condition("tags", "contains", "in")),
    ],
)
def test_values_may_contain_operator_words(text: str, expected: Condition) -> None:
    assert parse_expression(text) == expected


# --- deep filters: a FilterError, never a RecursionError --------------------------------------------

DEEP = 100_000
LEAF = {"field": "a", "op": "eq", "value": 1}


def nested(depth: int, combinator: str = "and") -> dict[str, object]:
    spec: dict[str, object] = dict(LEAF)
    for _ in range(depth):
        spec = {combinator: [spec]}
    return spec


def deep_list(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


def test_deep_filter_as_data_json_text_and_objects() -> None:
    from kernel.memory.filters import MAX_DEPTH

    leaf_text = '{"field": "a", "op": "eq", "value": 1}'
    deep_or: object = Condition("a", "eq", 1)
    for _ in range(DEEP):
        deep_or = Or((deep_or,))  # type: ignore[arg-type]
    for spec in (nested(DEEP), nested(DEEP, "or"), '{"and": [' * DEEP + leaf_text + "]}" * DEEP,
                 '{"and": [' * 500 + leaf_text + "]}" * 500, nested(MAX_DEPTH + 1), deep_or,
                 {"and": deep_list(DEEP)}, [deep_list(DEEP)]):
        with pytest.raises(FilterError, match="nested too deeply"):
            parse_filter(spec)  # type: ignore[arg-type]
    assert to_dict(parse_filter(nested(MAX_DEPTH))) == nested(MAX_DEPTH)  # type: ignore[arg-type]


def test_deep_values_in_a_bad_filter_give_the_usual_error() -> None:
    deep: dict[str, object] = {}
    for _ in range(DEEP):
        deep = {"x": deep}
    with pytest.raises(FilterError, match="unrecognised filter"):
        parse_filter(deep)
    with pytest.raises(FilterError, match="needs a scalar value"):
        parse_filter({"field": "a", "op": "eq", "value": deep})
    with pytest.raises(FilterError, match="scalar list items"):
        parse_filter({"field": "a", "op": "in", "value": [deep]})
    with pytest.raises(FilterError, match="non-empty list of filters"):
        parse_filter({"and": deep})
    with pytest.raises(FilterError, match="unknown filter operator"):
        parse_filter({"field": "a", "op": deep, "value": 1})
