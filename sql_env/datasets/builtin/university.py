"""University: students major in departments and enrol in courses."""

from __future__ import annotations

import random

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
    person,
    skewed_id,
    unique_pairs,
)

# The core departments, which questions name; the others are the same fields under a qualifier.
DEPARTMENTS = ("Physics", "Chemistry", "Biology", "Mathematics", "History", "Economics", "Philosophy",
               "Linguistics", "Computer Science", "Psychology", "Sociology", "Music", "Geology", "Law")
QUALIFIERS = ("Applied", "Theoretical", "Computational", "Experimental", "Comparative", "Modern",
              "Environmental", "Global", "Digital", "Quantitative", "Historical", "Social", "Public",
              "Mathematical", "Cognitive")
CORE_SHARE = 0.75  # of students and courses in a core department
BUILDINGS = ("North Hall", "South Hall", "Science Tower", "Main Building", "West Wing", "East Wing")
HOMETOWNS = ("Bristol", "Ghent", "Utrecht", "Bologna", "Graz", "Aarhus", "Lille", "Bergen",
             "Cork", "Malmo")
COURSE_PREFIXES = ("Introduction to", "Advanced", "Topics in", "Seminar in", "Foundations of",
                   "Applied", "History of", "Research in")
COURSES = 240
TERMS = ("2023 Spring", "2023 Fall", "2024 Spring", "2024 Fall")


def make_tables(rng: random.Random) -> list[Table]:
    names = DEPARTMENTS + tuple(f"{q} {d}" for q in QUALIFIERS for d in DEPARTMENTS)  # 14 + 210
    departments = [(i, name, rng.choice(BUILDINGS), rng.randrange(200_000, 3_000_000, 1000))
                   for i, name in enumerate(names, start=1)]

    def department() -> int:
        return skewed_id(rng, len(DEPARTMENTS), len(names), CORE_SHARE)

    students = []
    for i in range(1, 901):
        email = None if rng.random() < 0.08 else f"s{i}@uni.example.edu"
        students.append((i, person(rng), department(), rng.choice(HOMETOWNS),
                         rng.randint(2018, 2024), round(rng.uniform(1.5, 4.0), 2), email))
    courses, seen = [], set()
    while len(courses) < COURSES:
        dept = department()
        # 8 prefixes x 224 departments x 2 parts: plenty of distinct titles
        title = f"{rng.choice(COURSE_PREFIXES)} {names[dept - 1]}" + rng.choice(("", " II"))
        if title in seen:
            continue
        seen.add(title)
        courses.append((len(courses) + 1, title, dept, rng.choice((2, 3, 4, 5, 6)),
                        rng.choice((100, 200, 300, 400))))
    enrollments = []
    for student, course in unique_pairs(rng, 4500, 900, COURSES):
        grade = None if rng.random() < 0.1 else round(rng.uniform(1.0, 4.0), 1)
        enrollments.append((student, course, rng.choice(TERMS), grade))
    return [
        Table("departments", ("department_id INTEGER PRIMARY KEY", "name VARCHAR", "building VARCHAR",
                              "budget INTEGER"), (departments,)),
        Table("students", ("student_id INTEGER PRIMARY KEY", "name VARCHAR",
                           "department_id INTEGER REFERENCES departments(department_id)",
                           "hometown VARCHAR", "enrollment_year INTEGER", "gpa DOUBLE", "email VARCHAR"),
              (students,)),
        Table("courses", ("course_id INTEGER PRIMARY KEY", "title VARCHAR",
                          "department_id INTEGER REFERENCES departments(department_id)", "credits INTEGER",
                          "level INTEGER"), (courses,)),
        Table("enrollments", ("student_id INTEGER REFERENCES students(student_id)",
                              "course_id INTEGER REFERENCES courses(course_id)", "term VARCHAR",
                              "grade DOUBLE", "PRIMARY KEY (student_id, course_id)"), (enrollments,)),
    ]


SCHEMA = Schema(
    db_id="university",
    domain="education",
    make_tables=make_tables,
    entities=(
        Entity("departments", "department", "departments", key="department_id", label="name",
               nums=(Num("budget", "budget", (500000, 1000000, 1500000, 2000000, 2500000)),),
               cats=(Cat("name", "name", "names", DEPARTMENTS),
                     Cat("building", "building", "buildings", BUILDINGS))),
        Entity("students", "student", "students", key="student_id", label="name",
               nums=(Num("gpa", "gpa", (2, 2.5, 3, 3.2, 3.5, 3.8), additive=False),
                     Num("enrollment_year", "enrollment year", (2018, 2019, 2020, 2021, 2022, 2023), additive=False)),
               cats=(Cat("hometown", "hometown", "hometowns", HOMETOWNS),),
               nullable=("email", "email"),
               like=Like("name", "name", NAME_PREFIXES, NAME_FRAGMENTS)),
        Entity("courses", "course", "courses", key="course_id", label="title", label_word="title",
               nums=(Num("credits", "number of credits", (2, 3, 4, 5)), Num("level", "level", (100, 200, 300), additive=False)),
               like=Like("title", "title", COURSE_PREFIXES, ("ics", "ology", "tory", "ence"))),
        Entity("enrollments", "enrollment", "enrollments",
               nums=(Num("grade", "grade", (1.5, 2, 2.5, 3, 3.5), additive=False),),
               cats=(Cat("term", "term", "terms", TERMS),),
               nullable=("grade", "grade")),
    ),
    links=(
        Link("students", "departments", "department_id", "department_id", "department"),
        Link("courses", "departments", "department_id", "department_id", "department"),
        Link("enrollments", "students", "student_id", "student_id", "student"),
        Link("enrollments", "courses", "course_id", "course_id", "course"),
    ),
)
