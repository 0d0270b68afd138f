"""HR: employees work in offices, report to managers and are assigned to projects."""

from __future__ import annotations

import random

from sql_env.datasets.builtin.places import WORLD_CITIES
from sql_env.datasets.builtin.spec import (
    NAME_FRAGMENTS,
    NAME_PREFIXES,
    Cat,
    Entity,
    Like,
    Link,
    Num,
    Schema,
    Table,
    day,
    person,
    skewed_id,
    unique_pairs,
)

OFFICES = (("Berlin", "Germany"), ("Hamburg", "Germany"), ("Paris", "France"), ("Nantes", "France"),
           ("Madrid", "Spain"), ("Valencia", "Spain"), ("Warsaw", "Poland"), ("Prague", "Czechia"),
           ("Oslo", "Norway"), ("Helsinki", "Finland"), ("Chicago", "USA"), ("Atlanta", "USA"),
           ("Calgary", "Canada"), ("Melbourne", "Australia"), ("Nairobi", "Kenya"), ("Pune", "India"))
TITLES = ("Engineer", "Analyst", "Designer", "Accountant", "Recruiter", "Sales Rep", "Support Agent",
          "Data Scientist")
CODENAMES = ("Falcon", "Harbor", "Summit", "Orbit", "Beacon", "Cascade", "Ember", "Glacier", "Meadow",
             "Prism", "Quartz", "Tundra", "Willow", "Zephyr", "Canyon")
COLOURS = ("Blue", "Red", "Green", "Silver", "Golden", "Black")  # questions' LIKE patterns use these
MORE_COLOURS = ("White", "Amber", "Violet", "Crimson", "Indigo", "Scarlet", "Jade", "Copper", "Ivory", "Onyx")
BRANCH_OFFICES = 200  # besides the 16 head offices above (which questions name): sales branches worldwide
HEAD_OFFICE_SHARE = 0.8  # of employees
ROLES = ("lead", "developer", "reviewer", "tester", "advisor")


def make_tables(rng: random.Random) -> list[Table]:
    branches = rng.sample(WORLD_CITIES, BRANCH_OFFICES)
    offices = [(i, city, country) for i, (city, country) in enumerate(OFFICES + tuple(branches), start=1)]

    def office() -> int:
        return skewed_id(rng, len(OFFICES), len(offices), HEAD_OFFICE_SHARE)

    # The first 40 employees are managers; they are inserted first so the self-reference resolves.
    managers = [(i, person(rng), office(), None, "Manager",
                 rng.randrange(90_000, 180_000, 100), day(rng, "2010-01-01", "2018-12-31"))
                for i in range(1, 41)]
    staff = [(i, person(rng), office(), rng.randint(1, 40), rng.choice(TITLES),
              rng.randrange(35_000, 150_000, 100), day(rng, "2012-01-01", "2024-12-31"))
             for i in range(41, 701)]
    names = [f"{c} {n}" for c in COLOURS + MORE_COLOURS for n in CODENAMES]  # 16 x 15 = 240 projects
    rng.shuffle(names)
    projects = []
    for i, name in enumerate(names, start=1):
        start = day(rng, "2019-01-01", "2024-06-30")
        end = None if rng.random() < 0.3 else day(rng, start.isoformat(), "2025-12-31")
        projects.append((i, name, rng.randrange(20_000, 2_000_000, 1000), start, end))
    assignments = [(e, p, rng.randint(10, 400), rng.choice(ROLES))
                   for e, p in unique_pairs(rng, 2500, 700, len(projects))]
    return [
        Table("offices", ("office_id INTEGER PRIMARY KEY", "city VARCHAR", "country VARCHAR"), (offices,)),
        Table("employees", ("employee_id INTEGER PRIMARY KEY", "name VARCHAR",
                            "office_id INTEGER REFERENCES offices(office_id)",
                            "manager_id INTEGER REFERENCES employees(employee_id)", "job_title VARCHAR",
                            "salary INTEGER", "hire_date DATE"), (managers, staff)),
        Table("projects", ("project_id INTEGER PRIMARY KEY", "name VARCHAR", "budget INTEGER",
                           "start_date DATE", "end_date DATE"), (projects,)),
        Table("assignments", ("employee_id INTEGER REFERENCES employees(employee_id)",
                              "project_id INTEGER REFERENCES projects(project_id)", "hours INTEGER",
                              "role VARCHAR", "PRIMARY KEY (employee_id, project_id)"), (assignments,)),
    ]


SCHEMA = Schema(
    db_id="hr",
    domain="human resources",
    make_tables=make_tables,
    entities=(
        Entity("offices", "office", "offices", key="office_id", label="city", label_word="city",
               cats=(Cat("city", "city", "cities", tuple(o[0] for o in OFFICES)),
                     Cat("country", "country", "countries", tuple(dict.fromkeys(o[1] for o in OFFICES))))),
        Entity("employees", "employee", "employees", key="employee_id", label="name",
               nums=(Num("salary", "salary", (40000, 50000, 60000, 75000, 90000, 100000, 120000, 150000)),),
               cats=(Cat("job_title", "job title", "job titles", TITLES + ("Manager",)),),
               date=("hire_date", "hire date"), years=tuple(range(2012, 2025)),
               nullable=("manager_id", "manager"),
               like=Like("name", "name", NAME_PREFIXES, NAME_FRAGMENTS)),
        Entity("projects", "project", "projects", key="project_id", label="name",
               nums=(Num("budget", "budget", (50000, 100000, 250000, 500000, 1000000, 1500000)),),
               date=("start_date", "start date"), years=(2019, 2020, 2021, 2022, 2023, 2024),
               nullable=("end_date", "end date"),
               like=Like("name", "name", COLOURS, ("al", "er", "ar", "ow"))),
        Entity("assignments", "assignment", "assignments",
               nums=(Num("hours", "number of hours", (20, 50, 100, 150, 200, 300)),),
               cats=(Cat("role", "role", "roles", ROLES),)),
    ),
    links=(
        Link("employees", "offices", "office_id", "office_id", "office"),
        Link("assignments", "employees", "employee_id", "employee_id", "employee"),
        Link("assignments", "projects", "project_id", "project_id", "project"),
    ),
)
