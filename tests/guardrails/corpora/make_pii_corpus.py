"""Writes pii.jsonl: the labelled PII corpus the guards are measured on (benchmarks/guards.py,
tests/guardrails/test_pii.py). Seeded, so the file is reproducible; run it again only to change it:

    python tests/guardrails/corpora/make_pii_corpus.py

One item a line: {"id", "lang", "text", "pii": [{"type", "value"}], "lookalikes": [{"type", "value"}]}.
`pii` must be redacted (each value, completely); `lookalikes` must stay readable (no part redacted).
Values are fictitious: public example IBANs and test card numbers, numbers in ranges kept for
drama and documentation (Ofcom 020 7946 0xxx, 555-01xx) and randomly drawn ones with valid
checksums. Templates are business sentences as vendors write them, in seven languages, with
look-alikes beside the personal data (dates, order and reference numbers, amounts, postal
codes, VAT ids), and hand-written hard cases at the end (obfuscations, lower case, no spaces).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).with_name("pii.jsonl")

EXAMPLE_IBANS = [
    "DE89 3704 0044 0532 0130 00",
    "GB29 NWBK 6016 1331 9268 19",
    "FR14 2004 1010 0505 0001 3M02 606",
    "NL91 ABNA 0417 1643 00",
    "AT61 1904 3002 3457 3201",
    "CH93 0076 2011 6238 5295 7",
    "ES91 2100 0418 4502 0005 1332",
    "IT60 X054 2811 1010 0000 0123 456",
    "BE68 5390 0754 7034",
    "PL61 1090 1014 0000 0712 1981 2874",
    "IE29 AIBK 9311 5212 3456 78",
]
TEST_CARDS = [
    "4111 1111 1111 1111",
    "5500 0000 0000 0004",
    "3782 822463 10005",
    "6011 1111 1111 1117",
    "3530 1113 3330 0000",
    "4012 8888 8888 1881",
    "5105 1051 0510 5100",
    "2223 0031 2200 3222",
    "4000-0566-5566-5556",
    "5555555555554444",
    "371449635398431",
    "6011000990139424",
]
PHONES = {  # region: numbers as people write them
    "DE": [
        "+49 30 901820",
        "+49 (0)30 901820",
        "0049 30 901820",
        "030 901820",
        "030/901820",
        "+49 171 1234567",
        "0171 1234567",
        "+49 89 1234 5678",
        "089 12345678",
        "+49 40 123456-0",
        "0221 9876543",
    ],
    "GB": ["+44 20 7946 0958", "020 7946 0958", "+44 7700 900123", "07700 900456", "+44 161 496 0123", "0161 496 0321"],
    "US": ["+1 212 555 0123", "(212) 555-0147", "212-555-0182", "+1 (415) 555-0100", "415.555.0132"],
    "FR": ["+33 1 42 68 53 00", "01 42 68 53 00", "+33 6 12 34 56 78", "06 12 34 56 78"],
    "NL": ["+31 20 123 4567", "020 123 4567", "+31 6 12345678"],
    "AT": ["+43 1 234 5678", "01 234 5678"],
    "CH": ["+41 44 668 18 00", "044 668 18 00"],
    "IT": ["+39 06 1234 5678", "06 1234 5678"],
    "ES": ["+34 912 345 678", "912 345 678"],
    "PL": ["+48 22 123 45 67", "22 123 45 67"],
}
FIRST = ["anna", "max", "chloe", "luca", "emma", "james", "sophie", "jan", "marta", "pierre", "giulia", "lars"]
LAST = ["schmidt", "mustermann", "martin", "meier", "jansen", "carter", "dubois", "rossi", "kowalska", "garcia"]
DOMAINS = [
    "example.com",
    "example.de",
    "beispiel-gmbh.de",
    "mail.example.co.uk",
    "exemple.fr",
    "voorbeeld.nl",
    "esempio.it",
    "ejemplo.es",
    "przyklad.pl",
]


def _iban(rng: random.Random, country: str, length: int) -> str:
    letters = country in ("GB", "IE", "NL")
    bank = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) if letters else ""
    digits = length - 4 - len(bank)
    bban = bank + "".join(str(rng.randrange(10)) for _ in range(digits))
    check = 98 - int("".join(str(int(c, 36)) for c in bban + country + "00")) % 97
    return f"{country}{check:02d}{bban}"


def _grouped(s: str) -> str:
    return " ".join(s[i : i + 4] for i in range(0, len(s), 4))


def _luhn_complete(prefix: str, length: int, rng: random.Random) -> str:
    body = prefix + "".join(str(rng.randrange(10)) for _ in range(length - len(prefix) - 1))
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return body + str((10 - total % 10) % 10)


def _email(rng: random.Random) -> str:
    f, last, d = rng.choice(FIRST), rng.choice(LAST), rng.choice(DOMAINS)
    local = rng.choice(
        [
            f"{f}.{last}",
            f"{f[0]}.{last}",
            f"{f}{last}",
            f"{f}_{last}",
            f"{f}.{last}+invoices",
            "accounts.payable",
            "buchhaltung",
            "facturation",
        ]
    )
    return f"{local}@{d}"


def _obfuscated_email(rng: random.Random) -> str:
    f, last = rng.choice(FIRST), rng.choice(LAST)
    name, tld = rng.choice(DOMAINS[:3] + DOMAINS[4:6]).rsplit(".", 1)
    return rng.choice(
        [
            f"{f}.{last}(at){name}.{tld}",
            f"{f}.{last} [at] {name} [dot] {tld}",
            f"{f}.{last} (at) {name} (dot) {tld}",
            f"{f}.{last} at {name} dot {tld}",
            f"{f}.{last}[at]{name}.{tld}",
            f"{f}.{last}{{at}}{name}.{tld}",
        ]
    )


def _lookalikes(rng: random.Random) -> dict[str, str]:
    y, m, d = 2026, rng.randint(1, 12), rng.randint(1, 28)
    amount = rng.randint(100, 2_500_000) + rng.randint(0, 99) / 100
    return {
        "date": rng.choice(
            [
                f"{y}-{m:02d}-{d:02d}",
                f"{d:02d}.{m:02d}.{y}",
                f"{d:02d}/{m:02d}/{y}",
                f"{m}/{d}/{y}",
                f"{d}.{m}.{y}",
                f"{y}{m:02d}{d:02d}",
            ]
        ),
        "order_number": rng.choice(
            [
                f"45000{rng.randrange(10**5):05d}",
                f"PO-{y}-{rng.randrange(10**5):05d}",
                f"{rng.randrange(10**8):08d}",
                f"SO{rng.randrange(10**7):07d}",
                f"4500 {rng.randrange(10**3):03d} {rng.randrange(10**3):03d}",
            ]
        ),
        "reference": rng.choice(
            ["".join(str(rng.randrange(10)) for _ in range(n)) for n in (12, 16, 18, 19, 20)]
            + [f"RF{rng.randrange(10, 99)} {rng.randrange(10**4):04d} {rng.randrange(10**4):04d}"]
        ),
        "amount": rng.choice(
            [
                f"{amount:,.2f}",
                f"{amount:,.2f}".replace(",", " "),
                f"{amount:,.2f}".replace(",", "X").replace(".", ",").replace("X", "."),
                f"{amount:.2f}",
                f"{int(amount):,}".replace(",", "'"),
            ]
        ),
        "postal_code": rng.choice(
            [
                f"{rng.randint(10000, 99999)}",
                f"{rng.randint(1000, 9999)} {rng.choice('ABCDEFG')}{rng.choice('JKLMNP')}",
                f"{rng.randint(1000, 9999)}",
            ]
        ),
        "vat_id": rng.choice(
            [
                f"DE{rng.randrange(10**9):09d}",
                f"ATU{rng.randrange(10**8):08d}",
                f"FR{rng.randrange(10**11):011d}",
                f"NL{rng.randrange(10**9):09d}B01",
                f"GB{rng.randrange(10**9):09d}",
                f"IT{rng.randrange(10**11):011d}",
                f"ESB{rng.randrange(10**8):08d}",
                f"PL{rng.randrange(10**10):010d}",
                f"CHE-{rng.randrange(10**3):03d}.{rng.randrange(10**3):03d}.{rng.randrange(10**3):03d}",
            ]
        ),
    }


# Templates: {pii} is filled with a value of the named type, {la_TYPE} with a look-alike.
TEMPLATES = {
    "iban": [
        ("en", "Please remit {amount} to our new account {pii}, invoice date {date}."),
        ("en", "Bank details changed: IBAN {pii}. Our VAT id is {vat_id}."),
        ("de", "Bitte überweisen Sie {amount} EUR auf das Konto {pii} bis zum {date}."),
        ("de", "Neue Bankverbindung: {pii}, Bestellung {order_number}."),
        ("fr", "Merci de régler {amount} EUR sur le compte {pii}, TVA {vat_id}."),
        ("nl", "Gelieve {amount} over te maken naar {pii} voor {date}."),
        ("es", "Por favor transfiera {amount} EUR a la cuenta {pii}, pedido {order_number}."),
        ("it", "Si prega di versare {amount} EUR sul conto {pii} entro il {date}."),
        ("pl", "Prosimy o przelew {amount} PLN na rachunek {pii}, zamówienie {order_number}."),
    ],
    "card": [
        ("en", "Card on file {pii}, charge {amount} on {date}."),
        ("en", "Please charge the company card {pii} for order {order_number}."),
        ("de", "Kreditkarte {pii} belasten, Betrag {amount} EUR, Lieferung am {date}."),
        ("fr", "Carte bancaire {pii} à débiter de {amount} EUR."),
        ("es", "Cargar {amount} EUR a la tarjeta {pii}, pedido {order_number}."),
        ("nl", "Betaald met creditcard {pii} op {date}."),
        ("it", "Addebitare {amount} EUR sulla carta {pii}."),
    ],
    "email": [
        ("en", "Questions to {pii}, quoting order {order_number}."),
        ("en", "Send the remittance advice for {amount} to {pii}."),
        ("de", "Rückfragen bitte an {pii}, Rechnungsdatum {date}."),
        ("fr", "Pour toute question : {pii} (commande {order_number})."),
        ("nl", "Vragen over deze factuur: {pii}, btw-nummer {vat_id}."),
        ("es", "Dudas a {pii}, importe {amount} EUR."),
        ("it", "Per domande scrivere a {pii} entro il {date}."),
        ("pl", "Pytania prosimy kierować na {pii}, zamówienie {order_number}."),
    ],
    "phone": [
        ("en", "Call {pii} if the delivery of {date} is incomplete."),
        ("en", "Questions? Phone {pii}, reference {reference}."),
        ("de", "Bei Fragen: Tel. {pii}, Bestellnummer {order_number}."),
        ("de", "Ansprechpartner erreichbar unter {pii}, Lieferung vom {date}."),
        ("fr", "Contact : tél. {pii}, montant {amount} EUR."),
        ("nl", "Bel {pii} bij vragen over order {order_number}."),
        ("es", "Teléfono de contacto {pii}, importe {amount} EUR."),
        ("it", "Per informazioni chiamare il {pii} entro il {date}."),
        ("pl", "Kontakt: tel. {pii}, NIP {vat_id}."),
    ],
    "none": [
        ("en", "Delivered on {date}, order {order_number}."),
        ("en", "Total {amount} EUR, payment reference {reference}."),
        ("en", "Ship to warehouse, postal code {postal_code}, VAT id {vat_id}."),
        ("de", "Lieferung vom {date} zu Bestellung {order_number}, Betrag {amount} EUR."),
        ("de", "Verwendungszweck {reference}, USt-IdNr. {vat_id}."),
        ("de", "Lieferadresse PLZ {postal_code}, Auftrag {order_number} vom {date}."),
        ("fr", "Livraison du {date}, commande {order_number}, total {amount} EUR."),
        ("fr", "Référence de paiement {reference}, TVA intracommunautaire {vat_id}."),
        ("nl", "Levering op {date}, bestelling {order_number}, postcode {postal_code}."),
        ("es", "Entrega el {date}, pedido {order_number}, total {amount} EUR."),
        ("it", "Consegna del {date}, ordine {order_number}, partita IVA {vat_id}."),
        ("pl", "Dostawa {date}, zamówienie {order_number}, kwota {amount} PLN."),
        ("en", "Reference {reference}, amount {amount}, due {date}."),
    ],
}

# Hand-written: the attacker findings and other hard cases.
HANDWRITTEN = [
    ("en", "Delivered on 2026-11-15, order 4500012345", [], [("date", "2026-11-15"), ("order_number", "4500012345")]),
    ("en", "Total 1 234 567.89 EUR", [], [("amount", "1 234 567.89")]),
    ("en", "Reference 4929123456789012345 as agreed", [], [("reference", "4929123456789012345")]),
    ("en", "Payment ID 2026111500012345678, thank you", [], [("reference", "2026111500012345678")]),
    ("de", "Bitte auf de44500105175407324931 überweisen", [("iban", "de44500105175407324931")], []),
    ("de", "IBAN: de89 3704 0044 0532 0130 00 (neu)", [("iban", "de89 3704 0044 0532 0130 00")], []),
    (
        "de",
        "Max Mustermann, Hauptstr. 5, 10115 Berlin",
        [("person", "Max Mustermann"), ("address", "Hauptstr. 5, 10115 Berlin")],
        [],
    ),
    ("de", "Kontakt: max.mustermann(at)example.de", [("email", "max.mustermann(at)example.de")], []),
    (
        "en",
        "Write to jane.doe [at] example [dot] com for the credit note",
        [("email", "jane.doe [at] example [dot] com")],
        [],
    ),
    (
        "en",
        "Mail JOHN.SMITH@EXAMPLE.COM about PO-2026-00042",
        [("email", "JOHN.SMITH@EXAMPLE.COM")],
        [("order_number", "PO-2026-00042")],
    ),
    (
        "en",
        "Call +44 20 7946 0958, order 45000123 of 15/11/2026",
        [("phone", "+44 20 7946 0958")],
        [("order_number", "45000123"), ("date", "15/11/2026")],
    ),
    ("de", "Tel. 030 901820, Fax 030 9018210", [("phone", "030 901820"), ("phone", "030 9018210")], []),
    ("en", "Card 4111111111111111 expired, use the new one", [("card", "4111111111111111")], []),
    (
        "en",
        "Our VAT id DE123456789 and tax number 12/345/67890",
        [],
        [("vat_id", "DE123456789"), ("reference", "12/345/67890")],
    ),
    ("en", "BIC COBADEFFXXX, sort code 20-00-00", [], [("reference", "COBADEFFXXX"), ("reference", "20-00-00")]),
    ("en", "Tracking 1Z999AA10123456784, 3 pallets", [], [("reference", "1Z999AA10123456784")]),
    ("en", "EAN 4006381333931, qty 120", [], [("reference", "4006381333931")]),
    (
        "de",
        "Lieferschein 80012345 vom 15.11.2026, 14:30 Uhr",
        [],
        [("order_number", "80012345"), ("date", "15.11.2026")],
    ),
    (
        "fr",
        "Facture FA-2026-0042 du 15/11/2026, SIRET 732 829 320 00074",
        [],
        [("order_number", "FA-2026-0042"), ("date", "15/11/2026"), ("vat_id", "732 829 320 00074")],
    ),
    ("en", "Invoice INV-2026-0042 replaces INV-2026-0041", [], [("order_number", "INV-2026-0042")]),
    ("en", "Pay to GB82 WEST 1234 5698 7654 32 please", [("iban", "GB82 WEST 1234 5698 7654 32")], []),
    ("en", "amex 3714 496353 98431 on file", [("card", "3714 496353 98431")], []),
    (
        "nl",
        "Mail naar j.jansen@voorbeeld.nl of bel 06 12345678",
        [("email", "j.jansen@voorbeeld.nl"), ("phone", "06 12345678")],
        [],
    ),
    ("en", "Quantity 1500000 units at 0.25", [], [("amount", "1500000")]),
    ("de", "Summe 12.345,67 € netto, 14.691,35 € brutto", [], [("amount", "12.345,67"), ("amount", "14.691,35")]),
    (
        "en",
        "Contract 2026/0042/DE, valid until 31.12.2027",
        [],
        [("order_number", "2026/0042/DE"), ("date", "31.12.2027")],
    ),
]


def build(seed: int = 20261130, per_template: int = 5) -> list[dict]:
    rng = random.Random(seed)
    items: list[dict] = []
    # Drawn at random only where the IBAN has no national check digits of its own (Italian,
    # Spanish and Belgian IBANs come from the public examples above).
    countries = [("DE", 22), ("FR", 27), ("NL", 18), ("AT", 20), ("GB", 22), ("CH", 21), ("IE", 22), ("PL", 28)]
    brands = [
        ("4", 16),
        ("51", 16),
        ("55", 16),
        ("2221", 16),
        ("34", 15),
        ("37", 15),
        ("6011", 16),
        ("3528", 16),
        ("358", 16),
        ("4", 13),
    ]
    for kind, templates in TEMPLATES.items():
        for lang, template in templates:
            for _ in range(per_template if kind != "none" else per_template + 2):
                la = _lookalikes(rng)
                value = None
                if kind == "iban":
                    raw = (
                        rng.choice(EXAMPLE_IBANS)
                        if rng.random() < 0.3
                        else _grouped(_iban(rng, *rng.choice(countries)))
                    )
                    value = rng.choice([raw, raw.replace(" ", ""), raw.lower()]) if rng.random() < 0.3 else raw
                elif kind == "card":
                    if rng.random() < 0.4:
                        value = rng.choice(TEST_CARDS)
                    else:
                        digits = _luhn_complete(*rng.choice(brands), rng)
                        value = rng.choice(
                            [digits, _grouped(digits), "-".join(digits[i : i + 4] for i in range(0, len(digits), 4))]
                        )
                elif kind == "email":
                    value = _obfuscated_email(rng) if rng.random() < 0.3 else _email(rng)
                elif kind == "phone":
                    region = {
                        "en": rng.choice(["GB", "US"]),
                        "de": rng.choice(["DE", "AT", "CH"]),
                        "fr": "FR",
                        "nl": "NL",
                        "es": "ES",
                        "it": "IT",
                        "pl": "PL",
                    }[lang]
                    value = rng.choice(PHONES[region])
                used = [k for k in la if "{" + k + "}" in template]
                text = template.format(pii=value, **la)
                items.append(
                    {
                        "lang": lang,
                        "text": text,
                        "pii": [{"type": kind, "value": value}] if value else [],
                        "lookalikes": [{"type": k, "value": la[k]} for k in used],
                    }
                )
    for lang, text, pii, lookalikes in HANDWRITTEN:
        items.append(
            {
                "lang": lang,
                "text": text,
                "pii": [{"type": t, "value": v} for t, v in pii],
                "lookalikes": [{"type": t, "value": v} for t, v in lookalikes],
            }
        )
    for i, item in enumerate(items):
        item["id"] = i + 1
        for entry in item["pii"] + item["lookalikes"]:
            assert entry["value"] in item["text"], (item["text"], entry)
    return items


if __name__ == "__main__":
    items = build()
    OUT.write_text(
        "".join(
            json.dumps({"id": it["id"], **{k: v for k, v in it.items() if k != "id"}}, ensure_ascii=False) + "\n"
            for it in items
        ),
        encoding="utf-8",
    )
    print(
        f"{len(items)} items, {sum(len(it['pii']) for it in items)} personal data, "
        f"{sum(len(it['lookalikes']) for it in items)} look-alikes -> {OUT}"
    )
