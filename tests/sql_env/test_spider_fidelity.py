"""Spider-layout fixtures for each cause of a gold that gave another answer in DuckDB than in
SQLite: numbers stored as text (compared and averaged by SQLite's affinity rules), rows tied under
ORDER BY, LIKE's case, a reserved word as a name. Each gold is kept only when it gives SQLite's result."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from sql_env.datasets import load_dataset
from sql_env.datasets.importers import import_dataset

CARS = """
CREATE TABLE cars_data (Id INTEGER PRIMARY KEY, MPG TEXT, Cylinders INTEGER, Horsepower TEXT, Weight INTEGER);
CREATE TABLE tv (id INTEGER PRIMARY KEY, "show" TEXT, Rating TEXT);
CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT, grp INTEGER);
"""
CAR_ROWS = [(1, "18", 8, "130", 3504), (2, "15", 8, "165", 3693), (3, "null", 4, "95", 2372),
            (4, "24", 4, "null", 2430), (5, "26.5", 4, "88", 2234), (6, "14", 8, "220", 4354)]
GOLDS = [  # (query, kept?)
    ("SELECT count(*) FROM cars_data WHERE horsepower > 150", True),   # text compare in SQLite: '95', '88', 'null' > '150'
    ("SELECT avg(mpg) FROM cars_data", True),                          # 'null' counts as 0
    ("SELECT sum(horsepower) FROM cars_data WHERE cylinders = 8", True),
    ("SELECT max(horsepower) FROM cars_data", True),
    ("SELECT id FROM cars_data WHERE mpg = 18", True),
    ("SELECT id FROM cars_data WHERE horsepower < 100 AND cylinders = 4 ORDER BY id", True),
    ("SELECT name FROM people ORDER BY grp", True),                    # 2 groups of 600 tied rows
    ("SELECT \"show\" FROM tv WHERE \"show\" LIKE 'the%'", True),      # LIKE ignores case; a reserved word
    ("SELECT avg(rating) FROM tv", True),
    ("SELECT horsepower * 2 FROM cars_data ORDER BY id", False),        # no faithful rewrite: listed with its cause
]


def write_fixture(root: Path) -> Path:
    db = root / "database" / "car_1" / "car_1.sqlite"
    db.parent.mkdir(parents=True)
    con = sqlite3.connect(db)
    con.executescript(CARS)
    con.executemany("INSERT INTO cars_data VALUES (?, ?, ?, ?, ?)", CAR_ROWS)
    con.executemany("INSERT INTO tv VALUES (?, ?, ?)", [(1, "The Wire", "9.3"), (2, "the office", "8.9"),
                                                         (3, "Lost", "n/a")])
    con.executemany("INSERT INTO people VALUES (?, ?, ?)", [(i, f"p{i}", (i * 7919) % 2) for i in range(1200)])
    con.commit()
    con.close()
    (root / "dev.json").write_text(json.dumps([{"db_id": "car_1", "question": f"q{i}?", "query": q}
                                               for i, (q, _) in enumerate(GOLDS)]))
    return root


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("spider")
    report = import_dataset("spider", write_fixture(root / "src"), "fidelity", out_dir=root / "out")
    return report, root


def test_each_cause_is_imported_with_sqlites_answer(imported) -> None:
    report, root = imported
    kept = {ex.question: ex.gold_sql for ex in load_dataset(str(root / "out"), "dev")}
    assert sorted(kept) == sorted(f"q{i}?" for i, (_, ok) in enumerate(GOLDS) if ok), report.summary()
    assert report.matched == sum(ok for _, ok in GOLDS)
    assert "'150'" in kept["q0?"]  # SQLite compared text with text


def test_a_gold_left_out_names_its_cause(imported) -> None:
    report, _ = imported
    (problem,) = report.problems
    assert problem.detail.startswith("numbers stored as text in column car_1.cars_data.Horsepower"), problem
