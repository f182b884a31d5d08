"""Build headscope's fact set for ROME-style causal tracing.

Each fact is a (subject, relation, object) triple of common knowledge, rendered as a prompt that stops
right before the object. The model under study should complete the prompt with the object, so:

* ``subject`` occurs verbatim in ``prompt`` (causal tracing corrupts the subject's tokens);
* ``target`` is the object with a leading space, the way the model would predict it as the next token;
* ``prompt`` never contains the target text.

Run ``python data/generators/make_facts.py`` to (re)write ``data/facts.jsonl``, one JSON object
per line with the keys ``subject``, ``prompt``, ``target`` and ``relation``. The output is
deterministic: relations come in the order of ``RELATIONS`` and facts in the order of their tables.
"""

from __future__ import annotations

import json
from pathlib import Path

OUT = Path(__file__).parent.parent / "facts.jsonl"

# -- capital_of: country -> capital city ---------------------------------------------------------------------
CAPITALS = [
    ("France", "Paris"), ("Germany", "Berlin"), ("Italy", "Rome"), ("Spain", "Madrid"),
    ("Portugal", "Lisbon"), ("Greece", "Athens"), ("Austria", "Vienna"), ("Ireland", "Dublin"),
    ("Norway", "Oslo"), ("Sweden", "Stockholm"), ("Finland", "Helsinki"), ("Denmark", "Copenhagen"),
    ("Poland", "Warsaw"), ("Hungary", "Budapest"), ("the Czech Republic", "Prague"),
    ("the Netherlands", "Amsterdam"), ("Belgium", "Brussels"), ("Switzerland", "Bern"),
    ("Romania", "Bucharest"), ("Bulgaria", "Sofia"), ("Serbia", "Belgrade"), ("Croatia", "Zagreb"),
    ("Iceland", "Reykjavik"), ("Russia", "Moscow"), ("the United Kingdom", "London"),
    ("the United States", "Washington"), ("Canada", "Ottawa"), ("Cuba", "Havana"),
    ("Argentina", "Buenos Aires"), ("Peru", "Lima"), ("Chile", "Santiago"), ("Venezuela", "Caracas"),
    ("Egypt", "Cairo"), ("Kenya", "Nairobi"), ("Nigeria", "Abuja"), ("Morocco", "Rabat"),
    ("Ethiopia", "Addis Ababa"), ("Japan", "Tokyo"), ("China", "Beijing"), ("South Korea", "Seoul"),
    ("Thailand", "Bangkok"), ("Vietnam", "Hanoi"), ("Indonesia", "Jakarta"), ("the Philippines", "Manila"),
    ("Malaysia", "Kuala Lumpur"), ("Iran", "Tehran"), ("Iraq", "Baghdad"), ("Syria", "Damascus"),
    ("Lebanon", "Beirut"), ("Saudi Arabia", "Riyadh"), ("Turkey", "Ankara"), ("Afghanistan", "Kabul"),
    ("Pakistan", "Islamabad"), ("Nepal", "Kathmandu"), ("Australia", "Canberra"),
    ("New Zealand", "Wellington"), ("the United Arab Emirates", "Abu Dhabi"),
    ("the Democratic Republic of the Congo", "Kinshasa"), ("Papua New Guinea", "Port Moresby"),
]

# -- located_in: landmark -> city ----------------------------------------------------------------------------
LANDMARKS = [
    ("the Eiffel Tower", "Paris"), ("the Louvre", "Paris"), ("the Arc de Triomphe", "Paris"),
    ("the Colosseum", "Rome"), ("the Trevi Fountain", "Rome"), ("Big Ben", "London"),
    ("Buckingham Palace", "London"), ("Westminster Abbey", "London"), ("Tower Bridge", "London"),
    ("the Statue of Liberty", "New York"), ("the Empire State Building", "New York"),
    ("Times Square", "New York"), ("Central Park", "New York"), ("the Brooklyn Bridge", "New York"),
    ("the Golden Gate Bridge", "San Francisco"), ("Alcatraz Island", "San Francisco"),
    ("the White House", "Washington"), ("the Lincoln Memorial", "Washington"),
    ("the Space Needle", "Seattle"), ("the Willis Tower", "Chicago"), ("the Liberty Bell", "Philadelphia"),
    ("the Alamo", "San Antonio"), ("the Hollywood Sign", "Los Angeles"), ("the CN Tower", "Toronto"),
    ("the Brandenburg Gate", "Berlin"), ("the Kremlin", "Moscow"), ("Red Square", "Moscow"),
    ("the Acropolis", "Athens"), ("the Parthenon", "Athens"), ("the Sagrada Familia", "Barcelona"),
    ("the Prado Museum", "Madrid"), ("the Alhambra", "Granada"), ("the Hagia Sophia", "Istanbul"),
    ("the Charles Bridge", "Prague"), ("the Rijksmuseum", "Amsterdam"), ("the Anne Frank House", "Amsterdam"),
    ("the Uffizi Gallery", "Florence"), ("the Rialto Bridge", "Venice"), ("St. Mark's Basilica", "Venice"),
    ("the Atomium", "Brussels"), ("the Forbidden City", "Beijing"), ("Tiananmen Square", "Beijing"),
    ("the Taj Mahal", "Agra"), ("the Burj Khalifa", "Dubai"), ("the Petronas Towers", "Kuala Lumpur"),
    ("Christ the Redeemer", "Rio de Janeiro"),
]

# -- language_of: country -> main (and official) language ----------------------------------------------------
LANGUAGES = [
    ("France", "French"), ("Austria", "German"), ("Italy", "Italian"), ("Spain", "Spanish"),
    ("Mexico", "Spanish"), ("Argentina", "Spanish"), ("Colombia", "Spanish"), ("Chile", "Spanish"),
    ("Cuba", "Spanish"), ("Venezuela", "Spanish"), ("Portugal", "Portuguese"), ("Brazil", "Portuguese"),
    ("Japan", "Japanese"), ("Russia", "Russian"), ("Greece", "Greek"), ("Turkey", "Turkish"),
    ("Poland", "Polish"), ("the Netherlands", "Dutch"), ("Sweden", "Swedish"), ("Norway", "Norwegian"),
    ("Denmark", "Danish"), ("Hungary", "Hungarian"), ("Romania", "Romanian"), ("Bulgaria", "Bulgarian"),
    ("Croatia", "Croatian"), ("Serbia", "Serbian"), ("Ukraine", "Ukrainian"), ("Iceland", "Icelandic"),
    ("Iran", "Persian"), ("Vietnam", "Vietnamese"), ("South Korea", "Korean"), ("Indonesia", "Indonesian"),
    ("Egypt", "Arabic"), ("Saudi Arabia", "Arabic"), ("Syria", "Arabic"), ("Jordan", "Arabic"),
    ("Mongolia", "Mongolian"), ("Bangladesh", "Bengali"),
]

# -- sport_of: athlete -> sport ------------------------------------------------------------------------------
ATHLETES = [
    ("Lionel Messi", "football"), ("Cristiano Ronaldo", "football"), ("Pelé", "football"),
    ("Diego Maradona", "football"), ("Zinedine Zidane", "football"), ("David Beckham", "football"),
    ("Michael Jordan", "basketball"), ("LeBron James", "basketball"), ("Kobe Bryant", "basketball"),
    ("Shaquille O'Neal", "basketball"), ("Stephen Curry", "basketball"), ("Magic Johnson", "basketball"),
    ("Larry Bird", "basketball"), ("Kareem Abdul-Jabbar", "basketball"), ("Roger Federer", "tennis"),
    ("Rafael Nadal", "tennis"), ("Serena Williams", "tennis"), ("Novak Djokovic", "tennis"),
    ("Andy Murray", "tennis"), ("Pete Sampras", "tennis"), ("Steffi Graf", "tennis"),
    ("Tiger Woods", "golf"), ("Jack Nicklaus", "golf"), ("Arnold Palmer", "golf"), ("Rory McIlroy", "golf"),
    ("Babe Ruth", "baseball"), ("Derek Jeter", "baseball"), ("Mickey Mantle", "baseball"),
    ("Shohei Ohtani", "baseball"), ("Wayne Gretzky", "hockey"), ("Sidney Crosby", "hockey"),
    ("Alex Ovechkin", "hockey"), ("Sachin Tendulkar", "cricket"), ("Virat Kohli", "cricket"),
    ("Don Bradman", "cricket"), ("Magnus Carlsen", "chess"), ("Garry Kasparov", "chess"),
    ("Bobby Fischer", "chess"),
]

# -- made_by: product -> company (with a word for what kind of product it is) --------------------------------
PRODUCTS = [
    ("the iPhone", "smartphone", "Apple"), ("the iPad", "tablet", "Apple"),
    ("the MacBook", "laptop", "Apple"), ("the iPod", "music player", "Apple"),
    ("Safari", "web browser", "Apple"), ("iTunes", "media player", "Apple"),
    ("Windows", "operating system", "Microsoft"), ("the Xbox", "game console", "Microsoft"),
    ("Excel", "spreadsheet program", "Microsoft"), ("PowerPoint", "presentation program", "Microsoft"),
    ("Outlook", "email program", "Microsoft"), ("the PlayStation", "game console", "Sony"),
    ("the Walkman", "portable music player", "Sony"), ("the Game Boy", "handheld game console", "Nintendo"),
    ("the Wii", "game console", "Nintendo"), ("the GameCube", "game console", "Nintendo"),
    ("the Galaxy S", "smartphone", "Samsung"), ("the Pixel", "smartphone", "Google"),
    ("Android", "mobile operating system", "Google"), ("Gmail", "email service", "Google"),
    ("Chrome", "web browser", "Google"), ("the Kindle", "e-reader", "Amazon"),
    ("Alexa", "voice assistant", "Amazon"), ("Photoshop", "image editor", "Adobe"),
    ("Acrobat", "PDF program", "Adobe"), ("Firefox", "web browser", "Mozilla"),
    ("the Pentium", "processor", "Intel"), ("the Ryzen", "processor", "AMD"),
    ("the GeForce", "graphics card", "Nvidia"), ("the Snapdragon", "mobile chip", "Qualcomm"),
    ("the 747", "jumbo jet", "Boeing"), ("the A380", "airliner", "Airbus"),
    ("the Model S", "electric car", "Tesla"), ("the Prius", "hybrid car", "Toyota"),
    ("the Mustang", "sports car", "Ford"), ("the Big Mac", "hamburger", "McDonald's"),
    ("the Whopper", "hamburger", "Burger King"), ("the Frappuccino", "coffee drink", "Starbucks"),
    ("Sprite", "soft drink", "Coca-Cola"), ("Fanta", "soft drink", "Coca-Cola"),
]

# -- currency_of: country -> currency ------------------------------------------------------------------------
CURRENCIES = [
    ("Japan", "yen"), ("China", "yuan"), ("India", "rupee"), ("Pakistan", "rupee"), ("Russia", "ruble"),
    ("the United Kingdom", "pound"), ("Egypt", "pound"), ("the United States", "dollar"),
    ("Australia", "dollar"), ("Canada", "dollar"), ("New Zealand", "dollar"), ("Mexico", "peso"),
    ("Argentina", "peso"), ("Chile", "peso"), ("Colombia", "peso"), ("the Philippines", "peso"),
    ("Brazil", "real"), ("South Africa", "rand"), ("South Korea", "won"), ("Switzerland", "franc"),
    ("Sweden", "krona"), ("Norway", "krone"), ("Denmark", "krone"), ("Turkey", "lira"),
    ("Israel", "shekel"), ("Thailand", "baht"), ("Vietnam", "dong"), ("Indonesia", "rupiah"),
    ("Malaysia", "ringgit"), ("Saudi Arabia", "riyal"), ("Nigeria", "naira"), ("Kenya", "shilling"),
    ("Hungary", "forint"), ("Germany", "euro"), ("France", "euro"), ("Italy", "euro"), ("Spain", "euro"),
    ("Greece", "euro"), ("Portugal", "euro"), ("Ireland", "euro"),
]

# -- continent_of: country -> continent (no countries that straddle two continents) --------------------------
CONTINENTS = [
    ("France", "Europe"), ("Germany", "Europe"), ("Italy", "Europe"), ("Spain", "Europe"),
    ("Poland", "Europe"), ("Sweden", "Europe"), ("Norway", "Europe"), ("Greece", "Europe"),
    ("Hungary", "Europe"), ("Portugal", "Europe"), ("Ireland", "Europe"), ("Japan", "Asia"),
    ("China", "Asia"), ("India", "Asia"), ("Pakistan", "Asia"), ("Thailand", "Asia"), ("Vietnam", "Asia"),
    ("Mongolia", "Asia"), ("Nepal", "Asia"), ("the Philippines", "Asia"), ("Saudi Arabia", "Asia"),
    ("Kenya", "Africa"), ("Nigeria", "Africa"), ("Ethiopia", "Africa"), ("Ghana", "Africa"),
    ("Senegal", "Africa"), ("Tanzania", "Africa"), ("Zimbabwe", "Africa"), ("Madagascar", "Africa"),
    ("Morocco", "Africa"), ("Uganda", "Africa"), ("Brazil", "South America"), ("Argentina", "South America"),
    ("Peru", "South America"), ("Chile", "South America"), ("Colombia", "South America"),
    ("Bolivia", "South America"), ("Uruguay", "South America"), ("Venezuela", "South America"),
    ("Canada", "North America"), ("the United States", "North America"), ("Mexico", "North America"),
    ("Guatemala", "North America"),
]

# -- based_in: company -> country of its headquarters --------------------------------------------------------
COMPANIES = [
    ("Toyota", "Japan"), ("Honda", "Japan"), ("Sony", "Japan"), ("Nintendo", "Japan"),
    ("Panasonic", "Japan"), ("Canon", "Japan"), ("Samsung", "South Korea"), ("Hyundai", "South Korea"),
    ("Kia", "South Korea"), ("LG", "South Korea"), ("Volkswagen", "Germany"), ("BMW", "Germany"),
    ("Audi", "Germany"), ("Siemens", "Germany"), ("Bosch", "Germany"), ("Adidas", "Germany"),
    ("Porsche", "Germany"), ("Nokia", "Finland"), ("Volvo", "Sweden"), ("Ericsson", "Sweden"),
    ("H&M", "Sweden"), ("Ferrari", "Italy"), ("Lamborghini", "Italy"), ("Gucci", "Italy"),
    ("Prada", "Italy"), ("Renault", "France"), ("Michelin", "France"), ("L'Oréal", "France"),
    ("Nestlé", "Switzerland"), ("Lego", "Denmark"), ("Carlsberg", "Denmark"), ("Zara", "Spain"),
    ("Tata", "India"), ("Infosys", "India"), ("Huawei", "China"), ("Alibaba", "China"), ("Tencent", "China"),
]

# -- city_in: city -> country --------------------------------------------------------------------------------
CITIES = [
    ("Munich", "Germany"), ("Hamburg", "Germany"), ("Frankfurt", "Germany"), ("Lyon", "France"),
    ("Marseille", "France"), ("Bordeaux", "France"), ("Milan", "Italy"), ("Naples", "Italy"),
    ("Florence", "Italy"), ("Venice", "Italy"), ("Barcelona", "Spain"), ("Seville", "Spain"),
    ("Porto", "Portugal"), ("Zurich", "Switzerland"), ("Geneva", "Switzerland"), ("Salzburg", "Austria"),
    ("Krakow", "Poland"), ("Saint Petersburg", "Russia"), ("Istanbul", "Turkey"), ("Osaka", "Japan"),
    ("Kyoto", "Japan"), ("Busan", "South Korea"), ("Shanghai", "China"), ("Mumbai", "India"),
    ("Kolkata", "India"), ("Karachi", "Pakistan"), ("Ho Chi Minh City", "Vietnam"), ("Sydney", "Australia"),
    ("Melbourne", "Australia"), ("Auckland", "New Zealand"), ("Toronto", "Canada"), ("Vancouver", "Canada"),
    ("Montreal", "Canada"), ("Tijuana", "Mexico"), ("Rio de Janeiro", "Brazil"), ("São Paulo", "Brazil"),
    ("Medellín", "Colombia"), ("Casablanca", "Morocco"), ("Marrakesh", "Morocco"), ("Lagos", "Nigeria"),
    ("Cape Town", "South Africa"),
]


def cap(text: str) -> str:
    """``text`` ready to open a sentence: a leading "the" becomes "The"; names are left as they are."""
    return "The" + text[3:] if text.startswith("the ") else text


def article(noun: str) -> str:
    """The indefinite article for ``noun``: "an" before a vowel letter, else "a"."""
    return "an" if noun[:1].lower() in "aeiou" else "a"


def strip_article(subject: str) -> str:
    """The subject without a leading "the " (the article is part of the prompt, not of the entity)."""
    return subject[4:] if subject.startswith("the ") else subject


# Each relation: (name, table, function turning one table row into (subject, prompt, object)). The
# wordings were chosen so that the object is the natural next word, and so that SmolLM2-135M recalls a
# fair share of the facts (a bare "The official language of Japan is" gets " the" instead, for example).
RELATIONS = [
    ("capital_of", CAPITALS, lambda c, city: (c, f"The capital of {c} is the city of", city)),
    ("located_in", LANDMARKS, lambda place, city: (place, f"Tourists visit {place} in the city of", city)),
    ("language_of", LANGUAGES, lambda c, lang: (c, f"The main language spoken in {c} is", lang)),
    ("sport_of", ATHLETES, lambda a, sport: (a, f"{a} is a famous player in the sport of", sport)),
    ("made_by", PRODUCTS, lambda p, kind, co: (p, f"{cap(p)} is {article(kind)} {kind} produced by", co)),
    ("currency_of", CURRENCIES, lambda c, cur: (c, f"The official currency of {c} is the", cur)),
    ("continent_of", CONTINENTS, lambda c, x: (c, f"On a world map, {c} is found on the continent of", x)),
    ("based_in", COMPANIES, lambda co, c: (co, f"The company {co} is based in the country of", c)),
    ("city_in", CITIES, lambda city, c: (city, f"The city of {city} is located in the country of", c)),
]


def build() -> list[dict]:
    """All facts, in a fixed order, each checked: the subject occurs exactly once in the prompt, and
    the object does not occur in it at all (not even inside a longer word, case ignored)."""
    facts = []
    for relation, table, render in RELATIONS:
        for row in table:
            subject, prompt, obj = render(*row)
            subject = strip_article(subject)
            target = " " + obj
            assert prompt.count(subject) == 1, (relation, subject, prompt)
            assert obj.lower() not in prompt.lower(), (relation, prompt, obj)
            facts.append({"subject": subject, "prompt": prompt, "target": target, "relation": relation})
    return facts


def main() -> None:
    facts = build()
    with OUT.open("w", encoding="utf-8") as out:
        for fact in facts:
            out.write(json.dumps(fact, ensure_ascii=False) + "\n")
    print(f"wrote {len(facts)} facts to {OUT}")


if __name__ == "__main__":
    main()
