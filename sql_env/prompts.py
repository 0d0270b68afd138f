"""Prompts for text-to-SQL and SQL extraction from completions.

Plain prompts (base models, the built-in tiny policy) are deliberately terse: the schema DDL
dominates prompt length and prompt length is a direct cost for a small policy, so there is no
instruction prose. The model is trained to write one statement after `-- SQL:` and stop:

    CREATE TABLE customers (customer_id INT PRIMARY KEY, name TEXT, city TEXT, ...)
    ...
    -- Question: How many customers are there whose city is Lyon?
    -- SQL:
"""

from __future__ import annotations

import re
from typing import Any, Literal

from sql_env.types import Example

Style = Literal["plain", "chat"]

ANSWER_MARK = "-- SQL:"
CHAT_INSTRUCTION = "Write one DuckDB SQL query that answers the question. Reply with only the SQL."

# First words that start a SQL statement; anything else is not SQL. Non-SELECT statements are
# still returned so the sandbox, not the parser, decides they are forbidden.
_SQL_START = re.compile(
    r"^\(?\s*(SELECT|WITH|FROM|VALUES|TABLE|INSERT|UPDATE|DELETE|CREATE|DROP|ALTER|ATTACH|DETACH|COPY|"
    r"EXPORT|IMPORT|INSTALL|LOAD|SET|RESET|PRAGMA|CALL|EXPLAIN|DESCRIBE|SHOW|SUMMARIZE|USE|"
    r"BEGIN|COMMIT|ROLLBACK|CHECKPOINT|VACUUM|ANALYZE|REPLACE|TRUNCATE|MERGE|UNPIVOT|PIVOT)\b",
    re.IGNORECASE,
)
_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_PREFIX = re.compile(r"(?:^|\n)[ \t]*(?:--[ \t]*)?SQL(?:[ \t]+query)?[ \t]*:[ \t]*", re.IGNORECASE)


def _question_lines(example: Example) -> list[str]:
    lines = [f"Question: {example.question.strip()}"]
    if example.evidence:
        lines.append(f"Evidence: {example.evidence.strip()}")
    return lines


def render_prompt(example: Example, ddl: str, style: Style = "plain", tokenizer: Any = None) -> str:
    """The prompt for one example. `ddl` comes from `schema_ddl(db_path)`; `chat` needs a
    tokenizer that has a chat template (the generation prompt is appended)."""
    if style == "plain":
        body = "\n".join(f"-- {line}" for line in _question_lines(example))
        return f"{ddl.strip()}\n{body}\n{ANSWER_MARK}\n"
    if style == "chat":
        if tokenizer is None or not getattr(tokenizer, "chat_template", None):
            raise ValueError("prompt style 'chat' needs a tokenizer with a chat template; "
                             "use style='plain' for base models")
        content = "\n".join([ddl.strip(), "", *_question_lines(example), "", CHAT_INSTRUCTION])
        return tokenizer.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                             add_generation_prompt=True)
    raise ValueError(f"unknown prompt style {style!r}: use 'plain' or 'chat'")


def _first_statement(text: str) -> str:
    """Text up to the first `;` outside quotes, or the first line that is a comment or a fence
    (models that miss end-of-sequence go on to write the next `-- Question:`)."""
    out, quote, i = [], None, 0
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch == ";":
            break
        elif ch == "\n":
            rest = text[i + 1:].lstrip(" \t")
            if rest.startswith(("--", "```")) or rest.startswith("\n"):
                break
        out.append(ch)
        i += 1
    return "".join(out).strip()


def extract_sql(completion: str) -> str | None:
    """The first SQL statement in a completion, or None when there is none.

    Looks in a ```sql fence first (any fence if no sql one); otherwise a completion that starts
    with SQL is taken as is, else the text after a `SQL:` prefix, else from the first line that
    starts a statement. Returns the first statement without its semicolon."""
    if not completion or not completion.strip():
        return None
    text = completion
    fences = _FENCE.findall(completion)
    if fences:
        sql_fences = [body for lang, body in fences if lang.lower() in ("sql", "duckdb", "sqlite")]
        text = (sql_fences or [body for _, body in fences])[0]
    elif not _SQL_START.match(completion.strip()):
        prefix = _PREFIX.search(completion)
        if prefix:
            text = completion[prefix.end():]
    text = text.strip()
    if not _SQL_START.match(text):
        # "Here is the query:\nSELECT ..." - start at the first line that begins a statement.
        starts = [m.start() for m in re.finditer(r"^", text, re.MULTILINE) if _SQL_START.match(text[m.start():])]
        if not starts:
            return None
        text = text[starts[0]:]
    statement = _first_statement(text)
    return statement or None
