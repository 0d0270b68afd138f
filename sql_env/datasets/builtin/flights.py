"""Flights: airlines fly between airports; passengers book seats."""

from __future__ import annotations

import random

from sql_env.datasets.builtin.places import WORLD_CITIES, airport_code
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
    weighted,
)

AIRPORTS = (
    ("JFK", "Kennedy International", "New York", "USA"), ("LAX", "Los Angeles International",
    "Los Angeles", "USA"), ("ORD", "O'Hare International", "Chicago", "USA"),
    ("SEA", "Seattle Tacoma", "Seattle", "USA"), ("LHR", "Heathrow", "London", "UK"),
    ("LGW", "Gatwick", "London", "UK"), ("CDG", "Charles de Gaulle", "Paris", "France"),
    ("ORY", "Orly", "Paris", "France"), ("FRA", "Frankfurt Main", "Frankfurt", "Germany"),
    ("MUC", "Franz Josef Strauss", "Munich", "Germany"), ("AMS", "Schiphol", "Amsterdam", "Netherlands"),
    ("MAD", "Barajas", "Madrid", "Spain"), ("BCN", "El Prat", "Barcelona", "Spain"),
    ("FCO", "Fiumicino", "Rome", "Italy"), ("MXP", "Malpensa", "Milan", "Italy"),
    ("NRT", "Narita", "Tokyo", "Japan"), ("HND", "Haneda", "Tokyo", "Japan"),
    ("SYD", "Kingsford Smith", "Sydney", "Australia"), ("YYZ", "Pearson", "Toronto", "Canada"),
    ("DXB", "Dubai International", "Dubai", "UAE"), ("SIN", "Changi", "Singapore", "Singapore"),
    ("GRU", "Guarulhos", "Sao Paulo", "Brazil"), ("MEX", "Benito Juarez", "Mexico City", "Mexico"),
    ("IST", "Istanbul Airport", "Istanbul", "Turkey"), ("DUB", "Dublin Airport", "Dublin", "Ireland"),
    ("LIS", "Humberto Delgado", "Lisbon", "Portugal"), ("VIE", "Schwechat", "Vienna", "Austria"),
    ("ZRH", "Kloten", "Zurich", "Switzerland"), ("CPH", "Kastrup", "Copenhagen", "Denmark"),
    ("ICN", "Incheon", "Seoul", "South Korea"),
)
AIRLINES = (
    ("Atlas Air", "AT", "USA"), ("Blue Heron", "BH", "USA"), ("Northwind", "NW", "Canada"),
    ("Skyline", "SK", "UK"), ("Aurora Airways", "AU", "Norway"), ("Sol Air", "SO", "Spain"),
    ("Alpine Jet", "AJ", "Switzerland"), ("Sakura Wings", "SW", "Japan"), ("Kestrel", "KE", "Ireland"),
    ("Lusitania Air", "LA", "Portugal"), ("Danube Air", "DA", "Austria"), ("Falcon Gulf", "FG", "UAE"),
    ("Merlion Air", "MA", "Singapore"), ("Condor Sul", "CS", "Brazil"), ("Aztec Air", "AZ", "Mexico"),
    ("Bosphorus", "BO", "Turkey"), ("Tulip Air", "TA", "Netherlands"), ("Roma Jet", "RJ", "Italy"),
    ("Rhein Air", "RA", "Germany"), ("Seine Air", "SA", "France"), ("Koala Air", "KA", "Australia"),
    ("Han River Air", "HR", "South Korea"), ("Pacific Crest", "PC", "USA"), ("Viking Air", "VA", "Denmark"),
)
# The long tail: regional airports in WORLD_CITIES and smaller airlines. Most flights still touch the
# curated hubs and carriers above, which are the values questions name.
AIRLINE_WORDS = ("Sky", "Star", "Sun", "Moon", "Cloud", "Coast", "Island", "Bay", "River", "Lake", "Mountain",
                 "Valley", "Desert", "Polar", "Royal", "Silver", "Crystal", "Emerald", "Harbor", "Prairie")
AIRLINE_KINDS = ("Air", "Airways", "Airlines", "Express", "Jet", "Wings", "Connect", "Link", "Aviation")
AIRPORT_KINDS = {"Regional": 0.5, "International": 0.3, "Municipal": 0.2}
HUB_SHARE = 0.8  # share of flights between two hubs, and of flights flown by a curated airline
SEAT_CLASSES = {"economy": 0.7, "premium": 0.12, "business": 0.13, "first": 0.05}
MEALS = ("vegetarian", "vegan", "kosher", "halal", "gluten free")
CLASS_PRICE = {"economy": (60, 700), "premium": (200, 1100), "business": (500, 3000), "first": (1200, 6000)}


def _airports(rng: random.Random) -> list[tuple[str, str, str, str]]:
    taken = {a[0] for a in AIRPORTS}
    regional = [(airport_code(city, taken), f"{city} {weighted(rng, AIRPORT_KINDS)}", city, country)
                for city, country in WORLD_CITIES]
    return list(AIRPORTS) + regional


def _airlines(rng: random.Random) -> list[tuple[str, str, str]]:
    """(name, two-letter code, country): the curated ones, then one per word pair, in a seeded order."""
    taken = {a[1] for a in AIRLINES}
    free = [a + b for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if a + b not in taken]
    rng.shuffle(free)
    countries = sorted({c for _, c in WORLD_CITIES})
    names = [f"{w} {k}" for w in AIRLINE_WORDS for k in AIRLINE_KINDS]
    rng.shuffle(names)
    return list(AIRLINES) + [(name, free[i], rng.choice(countries)) for i, name in enumerate(names)]


def make_tables(rng: random.Random) -> list[Table]:
    all_airports = _airports(rng)
    all_airlines = _airlines(rng)
    airlines = [(i, name, country) for i, (name, _code, country) in enumerate(all_airlines, start=1)]
    flights = []
    for i in range(1, 1501):
        airline = skewed_id(rng, len(AIRLINES), len(all_airlines), HUB_SHARE)
        pool = len(AIRPORTS) if rng.random() < HUB_SHARE else len(all_airports)
        origin, destination = rng.sample(range(pool), 2)
        number = f"{all_airlines[airline - 1][1]}{rng.randint(100, 9999)}"
        flights.append((i, number, airline, all_airports[origin][0], all_airports[destination][0],
                        day(rng, "2023-01-01", "2024-12-31"), rng.randint(45, 900)))
    bookings = []
    for i in range(1, 4001):
        seat = weighted(rng, SEAT_CLASSES)
        meal = rng.choice(MEALS) if rng.random() < 0.3 else None
        bookings.append((i, rng.randint(1, 1500), person(rng), seat,
                         round(rng.uniform(*CLASS_PRICE[seat]), 2), meal))
    return [
        Table("airports", ("airport_code VARCHAR PRIMARY KEY", "name VARCHAR", "city VARCHAR",
                           "country VARCHAR"), (all_airports,)),
        Table("airlines", ("airline_id INTEGER PRIMARY KEY", "name VARCHAR", "country VARCHAR"),
              (airlines,)),
        Table("flights", ("flight_id INTEGER PRIMARY KEY", "flight_number VARCHAR",
                          "airline_id INTEGER REFERENCES airlines(airline_id)",
                          "origin VARCHAR REFERENCES airports(airport_code)",
                          "destination VARCHAR REFERENCES airports(airport_code)", "departure_date DATE",
                          "duration_min INTEGER"), (flights,)),
        Table("bookings", ("booking_id INTEGER PRIMARY KEY",
                           "flight_id INTEGER REFERENCES flights(flight_id)", "passenger_name VARCHAR",
                           "seat_class VARCHAR", "price DOUBLE", "meal_choice VARCHAR"), (bookings,)),
    ]


AIRPORT_CITY = Cat("city", "city", "cities", tuple(dict.fromkeys(a[2] for a in AIRPORTS)))
AIRPORT_COUNTRY = Cat("country", "country", "countries", tuple(dict.fromkeys(a[3] for a in AIRPORTS)))
SCHEMA = Schema(
    db_id="flights",
    domain="air travel",
    make_tables=make_tables,
    entities=(
        Entity("airports", "airport", "airports", key="airport_code", label="name",
               cats=(AIRPORT_CITY, AIRPORT_COUNTRY)),
        Entity("airlines", "airline", "airlines", key="airline_id", label="name",
               cats=(Cat("name", "name", "names", tuple(a[0] for a in AIRLINES)),
                     Cat("country", "country", "countries", tuple(dict.fromkeys(a[2] for a in AIRLINES))))),
        Entity("flights", "flight", "flights", key="flight_id", label="flight_number",
               label_word="flight number",
               nums=(Num("duration_min", "duration in minutes", (60, 90, 120, 180, 240, 300, 420, 600, 800)),),
               cats=(Cat("origin", "origin", "origins", tuple(a[0] for a in AIRPORTS)),
                     Cat("destination", "destination", "destinations", tuple(a[0] for a in AIRPORTS))),
               date=("departure_date", "departure date"), years=(2023, 2024),
               like=Like("flight_number", "flight number", tuple(a[1] for a in AIRLINES), ("12", "34", "50", "77", "99"))),
        Entity("bookings", "booking", "bookings", key="booking_id", label="passenger_name",
               label_word="passenger name",
               nums=(Num("price", "price", (100, 200, 300, 500, 800, 1000, 1500, 2000, 3000, 4000)),),
               cats=(Cat("seat_class", "seat class", "seat classes", tuple(SEAT_CLASSES)),
                     Cat("meal_choice", "meal choice", "meal choices", MEALS)),
               nullable=("meal_choice", "meal choice"),
               like=Like("passenger_name", "passenger name", NAME_PREFIXES, NAME_FRAGMENTS)),
    ),
    links=(
        Link("flights", "airlines", "airline_id", "airline_id", "airline"),
        Link("flights", "airports", "origin", "airport_code", "origin airport"),
        Link("flights", "airports", "destination", "airport_code", "destination airport"),
        Link("bookings", "flights", "flight_id", "flight_id", "flight"),
    ),
)
