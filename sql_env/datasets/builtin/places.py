"""Real cities by country: the long tail that lookup tables (airports, offices) are grown from.

The question generators keep drawing their values from each schema's short curated list (hubs,
head offices, core departments), so a question names a value the model can meet in training; the
tables hold these rows besides, so filters and joins select a minority of a realistic table.
"""

from __future__ import annotations

_BY_COUNTRY = {
    "USA": "Boston Denver Miami Dallas Houston Phoenix Portland Austin Detroit Nashville Baltimore Tampa Orlando "
           "Cleveland Pittsburgh Sacramento Raleigh Memphis Louisville Omaha Tulsa Albuquerque Tucson Fresno "
           "Spokane Boise Honolulu Anchorage Buffalo Richmond",
    "Canada": "Vancouver Montreal Ottawa Edmonton Winnipeg Halifax Quebec Victoria Regina Saskatoon",
    "Mexico": "Guadalajara Monterrey Cancun Tijuana Merida Puebla Oaxaca Leon",
    "Brazil": "Rio de Janeiro Brasilia Salvador Fortaleza Recife Manaus Curitiba Belem",
    "Argentina": "Buenos Aires Cordoba Rosario Mendoza Salta",
    "Chile": "Santiago Valparaiso Antofagasta Concepcion",
    "Peru": "Lima Cusco Arequipa Trujillo",
    "Colombia": "Bogota Medellin Cali Cartagena Barranquilla",
    "UK": "Manchester Birmingham Glasgow Edinburgh Leeds Liverpool Newcastle Belfast Cardiff Southampton",
    "France": "Lyon Marseille Toulouse Nice Bordeaux Strasbourg Montpellier Rennes",
    "Germany": "Cologne Stuttgart Dusseldorf Leipzig Dresden Hanover Nuremberg Bremen",
    "Spain": "Seville Bilbao Malaga Zaragoza Palma Alicante Granada",
    "Italy": "Naples Turin Venice Florence Bologna Palermo Genoa Bari Catania",
    "Netherlands": "Rotterdam Eindhoven Groningen Maastricht",
    "Belgium": "Brussels Antwerp Liege Charleroi",
    "Switzerland": "Geneva Basel Bern Lugano",
    "Austria": "Salzburg Innsbruck Linz Klagenfurt",
    "Poland": "Krakow Gdansk Wroclaw Poznan Katowice Lodz",
    "Czechia": "Brno Ostrava",
    "Hungary": "Budapest Debrecen",
    "Romania": "Bucharest Cluj Timisoara Iasi",
    "Greece": "Athens Thessaloniki Heraklion Rhodes",
    "Portugal": "Porto Faro Funchal",
    "Ireland": "Shannon Galway Kerry",
    "Denmark": "Billund Aalborg Odense",
    "Norway": "Stavanger Trondheim Tromso",
    "Sweden": "Stockholm Gothenburg Lulea Umea",
    "Finland": "Tampere Turku Oulu Rovaniemi",
    "Turkey": "Ankara Izmir Antalya Bodrum Trabzon",
    "Morocco": "Casablanca Marrakesh Tangier Agadir Fes",
    "Egypt": "Cairo Alexandria Luxor Hurghada",
    "Kenya": "Mombasa Kisumu Eldoret",
    "Nigeria": "Lagos Abuja Kano Port Harcourt",
    "South Africa": "Johannesburg Cape Town Durban Port Elizabeth",
    "Ethiopia": "Addis Ababa Dire Dawa",
    "India": "Mumbai Delhi Bangalore Chennai Kolkata Hyderabad Ahmedabad Jaipur Kochi Goa Lucknow",
    "China": "Beijing Shanghai Guangzhou Shenzhen Chengdu Xian Wuhan Hangzhou Kunming",
    "Japan": "Osaka Nagoya Fukuoka Sapporo Okinawa Sendai Hiroshima",
    "South Korea": "Busan Jeju Daegu",
    "Thailand": "Bangkok Phuket Chiang Mai Krabi",
    "Vietnam": "Hanoi Da Nang Ho Chi Minh City",
    "Indonesia": "Jakarta Bali Surabaya Medan",
    "Malaysia": "Kuala Lumpur Penang Kota Kinabalu",
    "Philippines": "Manila Cebu Davao",
    "Australia": "Brisbane Perth Adelaide Cairns Darwin Hobart Canberra",
    "New Zealand": "Auckland Wellington Christchurch Queenstown",
    "UAE": "Abu Dhabi Sharjah",
    "Qatar": "Doha",
    "Israel": "Tel Aviv Eilat",
    "Iceland": "Reykjavik Akureyri",
}
_MULTI_WORD = ("Rio de Janeiro", "Buenos Aires", "Port Harcourt", "Cape Town", "Port Elizabeth", "Addis Ababa",
               "Dire Dawa", "Chiang Mai", "Da Nang", "Ho Chi Minh City", "Kuala Lumpur", "Kota Kinabalu",
               "Abu Dhabi", "Tel Aviv")


def _split(names: str) -> list[str]:
    for multi in _MULTI_WORD:
        names = names.replace(multi, multi.replace(" ", "_"))
    return [n.replace("_", " ") for n in names.split()]


WORLD_CITIES: tuple[tuple[str, str], ...] = tuple(
    (city, country) for country, names in _BY_COUNTRY.items() for city in _split(names))


def airport_code(city: str, taken: set[str]) -> str:
    """A three-letter code from the city's letters (first letter, then later ones), unused so far."""
    letters = [c for c in city.upper() if c.isalpha()]
    first, rest = letters[0], letters[1:] + list("XYZQWV")
    for i in range(len(rest)):
        for j in range(i + 1, len(rest)):
            code = first + rest[i] + rest[j]
            if code not in taken:
                taken.add(code)
                return code
    raise ValueError(f"no free airport code for {city}")
