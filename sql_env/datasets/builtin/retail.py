"""Retail: customers place orders for products."""

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
    day,
    person,
    unique_pairs,
    weighted,
)

CITIES = ("Lyon", "Porto", "Denver", "Austin", "Leeds", "Munich", "Osaka", "Toronto", "Dublin",
          "Seville", "Krakow", "Boston")
CATEGORIES = {
    "Books": ("Novel", "Cookbook", "Atlas", "Journal", "Guide"),
    "Toys": ("Puzzle", "Robot", "Kite", "Yo-yo", "Train Set"),
    "Garden": ("Shovel", "Planter", "Hose", "Rake", "Lantern"),
    "Kitchen": ("Kettle", "Skillet", "Blender", "Teapot", "Knife Set"),
    "Sports": ("Football", "Racket", "Yoga Mat", "Helmet", "Jump Rope"),
    "Music": ("Guitar", "Ukulele", "Drum Pad", "Harmonica", "Metronome"),
    "Office": ("Stapler", "Notebook", "Desk Lamp", "Planner", "Pen Set"),
    "Beauty": ("Shampoo", "Lotion", "Perfume", "Hair Dryer", "Brush"),
}
PRICE_RANGE = {"Books": (5, 40), "Toys": (8, 80), "Garden": (10, 150), "Kitchen": (12, 220),
               "Sports": (10, 180), "Music": (15, 400), "Office": (3, 60), "Beauty": (6, 90)}
ADJECTIVES = ("Classic", "Deluxe", "Compact", "Modern", "Vintage", "Eco", "Smart", "Premium",
              "Mini", "Royal")
STATUSES = {"delivered": 0.55, "shipped": 0.2, "pending": 0.12, "cancelled": 0.08, "returned": 0.05}


def make_tables(rng: random.Random) -> list[Table]:
    customers = []
    for i in range(1, 601):
        name = person(rng)
        email = None if rng.random() < 0.1 else f"{name.lower().replace(' ', '.')}{i}@example.com"
        customers.append((i, name, rng.choice(CITIES), email, day(rng, "2020-01-01", "2024-06-30")))
    products = []
    for i in range(1, 301):
        category = rng.choice(list(CATEGORIES))
        low, high = PRICE_RANGE[category]
        name = f"{rng.choice(ADJECTIVES)} {rng.choice(CATEGORIES[category])}"
        products.append((i, name, category, round(rng.uniform(low, high), 2), rng.randint(0, 500)))
    orders = [(i, rng.randint(1, 600), day(rng, "2021-01-01", "2024-12-31"), weighted(rng, STATUSES))
              for i in range(1, 2001)]
    items = [(o, p, rng.randint(1, 10)) for o, p in unique_pairs(rng, 5000, 2000, 300)]
    return [
        Table("customers", ("customer_id INTEGER PRIMARY KEY", "name VARCHAR", "city VARCHAR",
                            "email VARCHAR", "signup_date DATE"), (customers,)),
        Table("products", ("product_id INTEGER PRIMARY KEY", "name VARCHAR", "category VARCHAR",
                           "price DOUBLE", "stock INTEGER"), (products,)),
        Table("orders", ("order_id INTEGER PRIMARY KEY",
                         "customer_id INTEGER REFERENCES customers(customer_id)", "order_date DATE",
                         "status VARCHAR"), (orders,)),
        Table("order_items", ("order_id INTEGER REFERENCES orders(order_id)",
                              "product_id INTEGER REFERENCES products(product_id)", "quantity INTEGER",
                              "PRIMARY KEY (order_id, product_id)"), (items,)),
    ]


CITY = Cat("city", "city", "cities", CITIES)
SCHEMA = Schema(
    db_id="retail",
    domain="retail",
    make_tables=make_tables,
    entities=(
        Entity("customers", "customer", "customers", key="customer_id", label="name",
               cats=(CITY,), date=("signup_date", "signup date"), years=(2020, 2021, 2022, 2023, 2024),
               nullable=("email", "email"),
               like=Like("name", "name", NAME_PREFIXES, NAME_FRAGMENTS)),
        Entity("products", "product", "products", key="product_id", label="name",
               nums=(Num("price", "price", (10, 20, 25, 30, 40, 50, 60, 75, 100, 120, 150, 200)),
                     Num("stock", "stock", (20, 50, 100, 150, 200, 250, 300, 400))),
               cats=(Cat("category", "category", "categories", tuple(CATEGORIES)),),
               like=Like("name", "name", ADJECTIVES, ("er", "an", "et", "ook", "ot"))),
        Entity("orders", "order", "orders", key="order_id", label="order_id", label_word="id",
               cats=(Cat("status", "status", "statuses", tuple(STATUSES)),),
               date=("order_date", "order date"), years=(2021, 2022, 2023, 2024)),
        Entity("order_items", "order item", "order items",
               nums=(Num("quantity", "quantity", (2, 3, 4, 5, 6, 7, 8, 9)),)),
    ),
    links=(
        Link("orders", "customers", "customer_id", "customer_id", "customer"),
        Link("order_items", "orders", "order_id", "order_id", "order"),
        Link("order_items", "products", "product_id", "product_id", "product"),
    ),
)
