import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from sql_env.datasets import database_path, load_dataset, schema_ddl
from sql_env.prompts import extract_sql, render_prompt
from sql_env.types import Example

EX = Example(id="x", db_id="shop", question="How many pens?", gold_sql="SELECT 1",
             evidence="pens are items with label pen")
DDL = "CREATE TABLE items (id INT PRIMARY KEY, label TEXT)"
GEMMA_LIKE = ("{% for m in messages %}<start_of_turn>{{ m['role'] }}\n{{ m['content'] }}<end_of_turn>\n"
              "{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")


def test_plain_prompt_is_exact_and_ends_at_the_answer_mark():
    assert render_prompt(EX, DDL) == (
        "CREATE TABLE items (id INT PRIMARY KEY, label TEXT)\n"
        "-- Question: How many pens?\n"
        "-- Evidence: pens are items with label pen\n"
        "-- SQL:\n")
    no_evidence = Example(id="y", db_id="shop", question="List labels.", gold_sql="SELECT label FROM items")
    assert "Evidence" not in render_prompt(no_evidence, DDL)


def test_chat_prompt_uses_the_tokenizers_template():
    tok = Tokenizer(models.WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, chat_template=GEMMA_LIKE)
    text = render_prompt(EX, DDL, style="chat", tokenizer=tokenizer)
    assert text.startswith("<start_of_turn>user\nCREATE TABLE items")
    assert "Question: How many pens?\nEvidence: pens are items with label pen" in text
    assert text.endswith("<end_of_turn>\n<start_of_turn>model\n")
    with pytest.raises(ValueError, match="needs a tokenizer with a chat template"):
        render_prompt(EX, DDL, style="chat")
    with pytest.raises(ValueError, match="unknown prompt style"):
        render_prompt(EX, DDL, style="fancy")


@pytest.mark.parametrize("completion, expected", [
    ("SELECT a FROM t", "SELECT a FROM t"),
    (" SELECT a FROM t;\n", "SELECT a FROM t"),
    ("SELECT a FROM t; DROP TABLE t", "SELECT a FROM t"),
    ("SELECT a FROM t WHERE b = 'x;y' AND c = \"q;\"", "SELECT a FROM t WHERE b = 'x;y' AND c = \"q;\""),
    ("SELECT a\nFROM t\n-- Question: next one\n-- SQL:\nSELECT 2", "SELECT a\nFROM t"),
    ("SELECT a FROM t\n\nThis query counts rows.", "SELECT a FROM t"),
    ("Here it is:\n```sql\nSELECT 1;\n```\nand more ```sql\nSELECT 2\n```", "SELECT 1"),
    ("```python\nx = 1\n```\n```SQL\nSELECT 3\n```", "SELECT 3"),
    ("```\nWITH c AS (SELECT 1) SELECT * FROM c\n```", "WITH c AS (SELECT 1) SELECT * FROM c"),
    ("```sql\nSELECT 4", "SELECT 4"),
    ("SQL: select x from t", "select x from t"),
    ("The answer.\n-- SQL: SELECT 5;", "SELECT 5"),
    ("Here is the query:\nSELECT 6 FROM t", "SELECT 6 FROM t"),
    ("DROP TABLE t", "DROP TABLE t"),
    ("I do not know.", None),
    ("", None),
    ("   \n", None),
    ("```sql\n```", None),
    ("SQL: ", None),
])
def test_extract_sql(completion, expected):
    assert extract_sql(completion) == expected


def test_gold_round_trips_through_the_plain_format(builtin_dir):
    """What the tiny policy is trained to emit after the prompt parses back to the gold."""
    for ex in load_dataset("builtin", "dev")[:50]:
        prompt = render_prompt(ex, schema_ddl(database_path("builtin", ex.db_id)))
        assert prompt.endswith("-- SQL:\n") and ex.question in prompt
        assert extract_sql(ex.gold_sql + "\n-- Question: junk") == ex.gold_sql
        assert len(prompt) < 800  # short prompts are the point; see sql_env/prompts.py
