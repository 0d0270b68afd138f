"""The family registry: each family's SQL shape, difficulty and phrasings.

The LAST phrasing of every family is held out: it appears only in dev and test. Held-out
phrasings reuse words that train shows elsewhere, so they test recombination, not vocabulary.
"""

from __future__ import annotations

from sql_env.datasets.builtin import families as f
from sql_env.datasets.builtin import joins as j
from sql_env.datasets.builtin.families import Family, entities, labelled

_HAS_NUM = entities(lambda e: labelled(e) and bool(e.nums))
_HAS_CAT = entities(lambda e: labelled(e) and any(c.col != e.label for c in e.cats))

FAMILIES: tuple[Family, ...] = (
    Family("projection", "easy", entities(lambda e: labelled(e) and any(c.col != e.label for c in e.nums + e.cats)),
           f.d_projection, (
               "List the {a} and {b} of all {plural}.",
               "Show each {singular}'s {a} and {b}.",
               "What are the {a} and {b} of every {singular}?",
               "Give the {a} and {b} for all {plural}.",
               "For every {singular}, show the {a} and {b}.")),
    Family("filter_compare", "easy", _HAS_NUM, f.d_compare, (
        "List the {labels} of {plural} whose {num} is {cmp} {v}.",
        "Which {plural} have {a_num} {cmp} {v}? Give their {labels}.",
        "Show the {labels} of {plural} with {num} {cmp} {v}.",
        "Find {plural} whose {num} is {cmp} {v} and list their {labels}.",
        "Give the {labels} of all {plural} with {a_num} {cmp} {v}.")),
    Family("filter_equal", "easy", _HAS_CAT, f.d_equal, (
        "List the {labels} of {plural} whose {cat} is {v}.",
        "Which {plural} have {cat} {v}? Give their {labels}.",
        "Show the {labels} of all {plural} with {cat} {v}.",
        "Find {plural} whose {cat} is {v} and list their {labels}.",
        "Give the {labels} of {plural} that have {cat} {v}.")),
    Family("filter_range", "easy", _HAS_NUM, f.d_range, (
        "List the {labels} of {plural} whose {num} is between {lo} and {hi}.",
        "Which {plural} have {a_num} between {lo} and {hi}? Give their {labels}.",
        "Show the {labels} of {plural} with {num} from {lo} to {hi}.",
        "Find {plural} with {a_num} between {lo} and {hi} and list their {labels}.",
        "Give the {labels} of all {plural} whose {num} is from {lo} to {hi}.")),
    Family("filter_like", "easy", entities(lambda e: labelled(e) and e.like is not None), f.d_like, (
        "List the {labels} of {plural} whose {col} {how}.",
        "Which {plural} have a {col} that {how}? Give their {labels}.",
        "Show the {labels} of all {plural} whose {col} {how}.",
        "Find {plural} whose {col} {how} and list their {labels}.",
        "Give the {labels} of {plural} with a {col} that {how}.")),
    Family("filter_in", "medium", _HAS_CAT, f.d_in, (
        "List the {labels} of {plural} whose {cat} is {v1} or {v2}.",
        "Which {plural} have {cat} {v1} or {v2}? Give their {labels}.",
        "Show the {labels} of {plural} with {cat} {v1} or {v2}.",
        "Find {plural} whose {cat} is either {v1} or {v2} and list their {labels}.",
        "Give the {labels} of all {plural} that have {cat} {v1} or {v2}.")),
    Family("filter_null", "easy", entities(lambda e: labelled(e) and e.nullable is not None), f.d_null, (
        "List the {labels} of {plural} {cond} that have no {col}.",
        "Which {plural} {cond} have no {col}? Give their {labels}.",
        "Show the {labels} of {plural} {cond} with a missing {col}.",
        "Find {plural} {cond} with no {col} and list their {labels}.",
        "Give the {labels} of all {plural} {cond} with no {col}.")),
    Family("count", "easy", entities(lambda e: bool(e.nums or e.cats)), f.d_count, (
        "How many {plural} are there {cond}?",
        "Count the {plural} {cond}.",
        "What is the number of {plural} {cond}?",
        "How many {plural} {cond} are there?",
        "Give the number of all {plural} {cond}.")),
    Family("aggregate", "medium", entities(lambda e: bool(e.nums)), f.d_aggregate, (
        "What is the {agg} {num} of {plural} {cond}?",
        "Find the {agg} {num} among {plural} {cond}.",
        "Show the {agg} {num} for {plural} {cond}.",
        "Compute the {agg} {num} of all {plural} {cond}.",
        "For {plural} {cond}, show the {agg} {num}.")),
    Family("group_by", "medium", entities(lambda e: any(c.col != e.label for c in e.cats)), f.d_group, (
        "For each {cat}, show the {measure}.",
        "List every {cat} with its {measure}.",
        "What is the {measure} per {cat}?",
        "Show the {measure} for each {cat}.",
        "Give the {measure} for every {cat}.")),
    Family("group_having", "hard", entities(lambda e: any(c.col != e.label for c in e.cats)), f.d_having, (
        "Which {cats} have {having}?",
        "List the {cats} with {having}.",
        "Find each {cat} that has {having}.",
        "Show the {cats} that have {having}.",
        "Give every {cat} with {having}.")),
    Family("order_limit", "medium", _HAS_NUM, f.d_top, (
        "List the {labels} of the {k} {plural}{wc} with the {ext} {num}.",
        "Which {k} {plural}{wc} have the {ext} {num}? Give their {labels}.",
        "Show the {labels} of the {k} {plural}{wc} with the {ext} {num}, in order.",
        "Find the {k} {plural}{wc} with the {ext} {num} and list their {labels}.",
        "Give the {labels} of the {k} {plural}{wc} that have the {ext} {num}.")),
    Family("distinct", "easy", entities(lambda e: bool(e.cats) and len(e.cats) + len(e.nums) > 1), f.d_distinct, (
        "List the distinct {cats} of {plural} {cond}.",
        "Which different {cats} appear among {plural} {cond}?",
        "Show each distinct {cat} of {plural} {cond}.",
        "What different {cats} do {plural} {cond} have?",
        "Give the distinct {cats} of all {plural} {cond}.")),
    Family("dates", "medium", entities(lambda e: e.date is not None), f.d_dates, (
        "How many {plural} have {a_date} {when}?",
        "Count the {plural} with {a_date} {when}.",
        "What is the number of {plural} whose {date} is {when}?",
        "How many {plural} have their {date} {when}?",
        "Give the number of {plural} whose {date} is {when}.")),
    Family("subquery_avg", "hard", _HAS_NUM, f.d_sub_avg, (
        "List the {labels} of {plural} {cond} and whose {num} is {cmp} the average {num}.",
        "Which {plural} {cond} have {a_num} {cmp} the average? Give their {labels}.",
        "Show the {labels} of {plural} {cond} with {num} {cmp} the average of all {plural}.",
        "Find {plural} {cond} and whose {num} is {cmp} the average, and list their {labels}.",
        "Give the {labels} of {plural} {cond} that have {a_num} {cmp} the average {num}.")),
    Family("join_one", "medium", j.one_hop, j.d_join_one, (
        "List the {labels} of {plural} whose {role} {pcat} is {v}.",
        "Which {plural} have {a_role} with {pcat} {v}? Give their {labels}.",
        "Show the {labels} of {plural} whose {role} has {pcat} {v}.",
        "Find {plural} whose {role} {pcat} is {v} and list their {labels}.",
        "Give the {labels} of all {plural} with {a_role} whose {pcat} is {v}.")),
    Family("join_two", "hard", j.two_hop, j.d_join_two, (
        "How many {plural} have {a_role1} whose {role2} {pcat} is {v}?",
        "Count the {plural} whose {role1} has {a_role2} with {pcat} {v}.",
        "What is the number of {plural} with {a_role1} whose {role2} {pcat} is {v}?",
        "How many {plural} belong to {a_role1} whose {role2} has {pcat} {v}?",
        "Give the number of {plural} whose {role1} {role2} {pcat} is {v}.")),
    Family("subquery_in", "hard", j.in_subquery, j.d_sub_in, (
        "List the {labels} of {plural} that have at least one {child} {cond}.",
        "Which {plural} have {a_child} {cond}? Give their {labels}.",
        "Show the {labels} of {plural} with at least one {child} {cond}.",
        "Find {plural} that have {a_child} {cond} and list their {labels}.",
        "Give the {labels} of every {singular} with {a_child} {cond}.")),
)
