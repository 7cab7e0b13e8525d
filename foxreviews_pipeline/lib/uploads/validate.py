"""Row validation: each cell checked and converted, each problem reported with its row
number, column and a reason staff can act on. An empty cell is `None` everywhere: it means
"leave the stored value alone", never "blank it"."""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

import idna
from email_validator import EmailNotValidError, validate_email

from foxreviews_pipeline.lib.reference.communes import normalise_name, slugify
from foxreviews_pipeline.lib.sirene.identifiers import siren_valid, siret_valid
from foxreviews_pipeline.lib.uploads.model import MAX_CELL_CHARS, RowError
from foxreviews_pipeline.lib.uploads.readers import NumericText, Table
from foxreviews_pipeline.lib.uploads.specs import (
    CATEGORIES,
    ENTREPRISES,
    FREE_TEXT,
    MAX_LENGTHS,
    SOUS_CATEGORIES,
    SPECS,
    VILLES,
)


class Invalid(ValueError):
    """A cell's value is not acceptable; the message is the reason."""

    def __init__(self, reason: str, code: str = "invalid_value"):
        super().__init__(reason)
        self.code = code


@dataclass
class ValidRow:
    row: int
    values: dict[str, Any]
    key: Any


@dataclass
class Validated:
    import_type: str
    columns: list[str]  # the spec columns the file carries, in spec order
    rows: list[ValidRow] = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    unknown_columns: list[str] = field(default_factory=list)
    ignored_columns: list[str] = field(default_factory=list)


_SPACES = re.compile(r"[\s\u00a0\u202f]+")
_NAF = re.compile(r"^[0-9]{2}\.[0-9]{2}[A-Z]$")
_NAF_COMPACT = re.compile(r"^([0-9]{2})([0-9]{2}[A-Z])$")
_POSTAL = re.compile(r"^[0-9]{5}$")
_CODE_INSEE = re.compile(r"^(?:[0-9]{2}|2A|2B)[0-9]{3}$")
_DEPARTEMENT = re.compile(r"^(?:0[1-9]|1[0-9]|2[1-9]|[3-8][0-9]|9[0-5]|2A|2B|97[1-6])$")
_SLUG = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
# C0 controls except tab, line feed and carriage return (a NUL cannot even be stored).
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# What makes a spreadsheet read a cell as a formula (OWASP "CSV injection").
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# codes_postaux is a flat list: deeper JSON is refused before it is parsed.
MAX_JSON_DEPTH = 2
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_URL_FORBIDDEN = re.compile(r"[\s\"'<>\\`{}|^\x00-\x1f\x7f]")
_PHONE = re.compile(r"^\+?[0-9 ().-]{6,30}$")

TRUE_WORDS = frozenset({"true", "1", "oui", "vrai", "yes"})
FALSE_WORDS = frozenset({"false", "0", "non", "faux", "no"})


def _digits(value: str, width: int, label: str) -> str:
    compact = _SPACES.sub("", value)
    if isinstance(value, NumericText) and compact.isdigit() and len(compact) < width:
        # Excel drops leading zeros of identifiers typed as numbers.
        compact = compact.zfill(width)
    if not (compact.isascii() and compact.isdigit() and len(compact) == width):
        raise Invalid(f"{label} must be {width} digits, got {value!r}")
    return compact


def v_siret(value: str) -> str:
    siret = _digits(value, 14, "SIRET")
    if not siret_valid(siret):
        raise Invalid(f"SIRET {siret} fails its check digit (Luhn)")
    return siret


def v_siren(value: str) -> str:
    siren = _digits(value, 9, "SIREN")
    if not siren_valid(siren):
        raise Invalid(f"SIREN {siren} fails its check digit (Luhn)")
    return siren


def _shown(value: str, limit: int = 60) -> str:
    """A value quoted in a reason, cut so that a reason stays one readable line."""
    return repr(value if len(value) <= limit else value[:limit] + "…")


def check_cell(value: str) -> None:
    """What no cell may hold, whatever its column: more than the cell limit, or control
    characters (a NUL would fail the whole write)."""
    if len(value) > MAX_CELL_CHARS:
        raise Invalid(
            f"the value is longer than {MAX_CELL_CHARS:,} characters (the longest cell an "
            "upload may hold)",
            "too_long",
        )
    found = _CONTROL.search(value)
    if found:
        raise Invalid(
            f"the value holds the control character U+{ord(found.group()):04X}, "
            "which a text column cannot take",
        )


def check_length(column: str, value: Any, limit: int | None) -> None:
    if limit is not None and isinstance(value, str) and len(value) > limit:
        raise Invalid(
            f"{column} is {len(value):,} characters long; the limit for {column} is {limit:,}",
            "too_long",
        )


def check_not_formula(column: str, value: Any) -> None:
    if isinstance(value, str) and value.startswith(FORMULA_START):
        shown = {"\t": "a tab", "\r": "a carriage return"}.get(value[0], repr(value[0]))
        raise Invalid(
            f"{column} starts with {shown}: a spreadsheet would run it as a formula "
            "(remove that first character)",
            "formula",
        )


def v_text(value: str) -> str:
    if value == "[ND]":
        raise Invalid("[ND] (masked by INSEE) is not a value")
    return value


def v_postal(value: str) -> str:
    return _digits(value, 5, "postal code")


def v_naf(value: str) -> str:
    code = _SPACES.sub("", value).upper()
    compact = _NAF_COMPACT.match(code)
    if compact:
        code = f"{compact.group(1)}.{compact.group(2)}"
    if not _NAF.match(code):
        raise Invalid(f"NAF code must look like 62.01Z, got {value!r}")
    return code


def v_bool(value: str) -> bool:
    word = value.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise Invalid(f"expected true/false, 1/0 or oui/non, got {value!r}")


def v_email(value: str) -> str:
    """One plain address (no display name, no quotes, no list), syntax only: deliverability
    is not checked (that needs the network)."""
    try:
        checked = validate_email(value, check_deliverability=False)
    except EmailNotValidError as exc:
        raise Invalid(f"not an e-mail address: {_shown(value)} ({exc})") from None
    return checked.normalized


def v_phone(value: str) -> str:
    if not _PHONE.match(value) or sum(c.isdigit() for c in value) < 6:
        raise Invalid(f"not a telephone number: {value!r}")
    return value


def v_url(value: str) -> str:
    """An http(s) address; `www.example.fr` gets `https://`. Any other scheme (`javascript:`,
    `data:`, `ftp:`…) is refused, so that a link the web app shows can only open a page."""
    scheme = _SCHEME.match(value)
    # `www.example.fr:8080` has a port, not a scheme: a scheme has no dot.
    if scheme and "." not in scheme.group(1):
        if scheme.group(1).lower() not in ("http", "https"):
            raise Invalid(f"site_web must be an http:// or https:// address, got {_shown(value)}")
        url = value
    else:
        url = "https://" + value
    if _URL_FORBIDDEN.search(url):
        raise Invalid(f"not a web address (spaces, quotes or <> in it): {_shown(value)}")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise Invalid(f"not a web address: {_shown(value)}") from None
    if parts.scheme.lower() not in ("http", "https") or "." not in host or "@" in parts.netloc:
        raise Invalid(f"not a web address: {_shown(value)}")
    if host.isascii():
        return url
    return urlunsplit(parts._replace(netloc=_idna_netloc(parts, host, value)))


# Scripts that one label may combine: Japanese writes kanji with both kanas.
_SCRIPTS_TOGETHER = ({"CJK", "HIRAGANA", "KATAKANA", "KATAKANA-HIRAGANA"},)


def _scripts(label: str) -> set[str]:
    """The scripts of a label's letters, by their Unicode names (LATIN, CYRILLIC, GREEK…)."""
    return {unicodedata.name(c, "?").split()[0] for c in label if c.isalpha()}


def _idna_netloc(parts: SplitResult, host: str, value: str) -> str:
    """The host of an internationalised address as IDNA (`xn--…`), the form a browser and
    the web app's links use; a label that mixes scripts (a Cyrillic e among Latin letters,
    the look-alike of a Latin site) is refused."""
    for label in host.split("."):
        scripts = _scripts(label)
        if len(scripts) > 1 and not any(scripts <= allowed for allowed in _SCRIPTS_TOGETHER):
            raise Invalid(
                f"site_web host mixes scripts ({', '.join(sorted(scripts)).lower()}) in "
                f"{label!r}, as a look-alike address would: {_shown(value)}"
            )
    try:
        ascii_host = idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise Invalid(f"not a valid internationalised host ({exc}): {_shown(value)}") from None
    port = f":{parts.port}" if parts.port is not None else ""
    return ascii_host + port


def v_code_insee(value: str) -> str:
    code = _SPACES.sub("", value).upper()
    if isinstance(value, NumericText) and code.isdigit() and len(code) == 4:
        code = code.zfill(5)
    if not _CODE_INSEE.match(code):
        raise Invalid(f"INSEE commune code must be 5 characters like 69123 or 2A004, got {value!r}")
    return code


def v_departement(value: str) -> str:
    code = _SPACES.sub("", value).upper()
    if isinstance(value, NumericText) and code.isdigit() and len(code) == 1:
        code = code.zfill(2)
    if not _DEPARTEMENT.match(code):
        raise Invalid(f"département must be 01–95, 2A, 2B or 971–976, got {value!r}")
    return code


def json_depth(text: str) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings skipped), found
    without parsing it: the parser recurses once per level."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def v_codes_postaux(value: str) -> list[str]:
    text = value.strip()
    items: list[Any]
    if text.startswith("["):
        if json_depth(text) > MAX_JSON_DEPTH:
            raise Invalid(
                f"codes_postaux nests JSON more than {MAX_JSON_DEPTH} levels deep: "
                'expected a flat list like ["69001","69002"]'
            )
        try:
            items = json.loads(text)
        except (json.JSONDecodeError, RecursionError):
            raise Invalid(f"codes_postaux is not a JSON list: {_shown(value)}") from None
        if not isinstance(items, list):
            raise Invalid(f"codes_postaux is not a list: {value!r}")
    else:
        items = [p for p in re.split(r"[,;|/\s]+", text) if p]
    codes = []
    for item in items:
        code = str(item).strip()
        if not _POSTAL.match(code):
            raise Invalid(f"codes_postaux holds {code!r}, which is not a 5-digit postal code")
        if code not in codes:
            codes.append(code)
    if not codes:
        raise Invalid("codes_postaux is empty")
    return codes


def _number(value: str) -> float:
    text = _SPACES.sub("", value).replace(",", ".")
    try:
        number = float(text)
    except ValueError:
        raise Invalid(f"not a number: {value!r}") from None
    if not math.isfinite(number):
        raise Invalid(f"not a number: {value!r}")
    return number


def v_lat(value: str) -> float:
    number = _number(value)
    if not -90 <= number <= 90:
        raise Invalid(f"latitude must be between -90 and 90, got {value!r}")
    return number


def v_lng(value: str) -> float:
    number = _number(value)
    if not -180 <= number <= 180:
        raise Invalid(f"longitude must be between -180 and 180, got {value!r}")
    return number


def v_non_negative_int(value: str) -> int:
    number = _number(value)
    if not number.is_integer() or not 0 <= number <= 2**31 - 1:
        raise Invalid(f"expected a whole number ≥ 0, got {value!r}")
    return int(number)


def v_ordre(value: str) -> int:
    number = _number(value)
    if not number.is_integer() or abs(number) > 2**31 - 1:
        raise Invalid(f"ordre must be a whole number, got {value!r}")
    return int(number)


def v_slug(value: str) -> str:
    if not _SLUG.match(value):
        raise Invalid(f"a slug is lower-case letters, digits and single hyphens, got {value!r}")
    return value


VALIDATORS: dict[str, dict[str, Callable[[str], Any]]] = {
    ENTREPRISES: {
        "siret": v_siret,
        "siren": v_siren,
        "nom": v_text,
        "nom_commercial": v_text,
        "adresse": v_text,
        "code_postal": v_postal,
        "ville_nom": v_text,
        "naf_code": v_naf,
        "telephone": v_phone,
        "email_contact": v_email,
        "site_web": v_url,
        "is_active": v_bool,
    },
    VILLES: {
        "nom": v_text,
        "code_insee": v_code_insee,
        "code_postal_principal": v_postal,
        "codes_postaux": v_codes_postaux,
        "departement": v_departement,
        "region": v_text,
        "lat": v_lat,
        "lng": v_lng,
        "population": v_non_negative_int,
    },
    CATEGORIES: {
        "nom": v_text,
        "slug": v_slug,
        "description": str,
        "meta_description": str,
        "ordre": v_ordre,
    },
    SOUS_CATEGORIES: {
        "nom": v_text,
        "categorie": v_text,
        "slug": v_slug,
        "description": str,
        "meta_description": str,
        "mots_cles": str,
        "ordre": v_ordre,
    },
}

# A value the row cannot do without (the column being present is checked per file).
REQUIRED_VALUES: dict[str, tuple[str, ...]] = {
    ENTREPRISES: ("siret", "nom"),
    VILLES: ("nom",),
    CATEGORIES: ("nom",),
    SOUS_CATEGORIES: ("nom", "categorie"),
}


def _cross_checks(import_type: str, values: dict[str, Any]) -> list[tuple[str, str]]:
    """Rules between cells of one row: (column, reason) pairs."""
    problems: list[tuple[str, str]] = []
    if import_type == ENTREPRISES:
        siret, siren = values.get("siret"), values.get("siren")
        if siret and siren and siret[:9] != siren:
            problems.append(
                ("siren", f"SIREN {siren} does not match the SIRET (which starts with {siret[:9]})")
            )
    if import_type == VILLES:
        code, dep = values.get("code_insee"), values.get("departement")
        if code and dep and not code.startswith(dep):
            problems.append(("departement", f"département {dep} does not match code_insee {code}"))
        if (values.get("lat") is None) != (values.get("lng") is None):
            problems.append(
                ("lat" if values.get("lat") is None else "lng", "lat and lng go together")
            )
    return problems


def _key(import_type: str, values: dict[str, Any]) -> Any:
    if import_type == ENTREPRISES:
        return values.get("siret")
    if import_type == VILLES:
        if values.get("code_insee"):
            return values["code_insee"]
        return (normalise_name(values.get("nom") or ""), values.get("code_postal_principal"))
    return values.get("slug")


def _key_label(import_type: str, key: Any) -> tuple[str, str]:
    if import_type == ENTREPRISES:
        return "siret", f"siret {key}"
    if import_type == VILLES:
        if isinstance(key, str):
            return "code_insee", f"code_insee {key}"
        return "nom", f"ville {key[0]!r} with code_postal_principal {key[1]}"
    return "slug", f"slug {key}"


def validate(import_type: str, table: Table, header: list[str]) -> Validated:
    spec = SPECS[import_type]
    validators = VALIDATORS[import_type]
    limits = MAX_LENGTHS[import_type]
    free_text = FREE_TEXT[import_type]
    positions = {name: i for i, name in enumerate(header) if name in validators}
    result = Validated(
        import_type=import_type,
        columns=[c for c in (*spec.required, *spec.optional) if c in positions],
        unknown_columns=[c for c in header if c and c not in spec.columns] + table.extra_columns,
        ignored_columns=[c for c in header if c in spec.ignored],
    )
    candidates: list[ValidRow] = []
    for number, cells in table.rows:
        values: dict[str, Any] = {}
        row_errors: list[RowError] = []
        for column, position in positions.items():
            raw = cells[position] if position < len(cells) else None
            if raw is None:
                values[column] = None
                continue
            try:
                check_cell(raw)
                value = validators[column](raw)
                check_length(column, value, limits.get(column))
                if column in free_text:
                    check_not_formula(column, value)
                values[column] = value
            except Invalid as exc:
                row_errors.append(RowError(number, column, str(exc), exc.code))
        for column in REQUIRED_VALUES[import_type]:
            if (
                column in positions
                and values.get(column) is None
                and not any(e.column == column for e in row_errors)
            ):
                row_errors.append(
                    RowError(number, column, f"{column} is required", "missing_value")
                )
        if not row_errors:
            for column, reason in _cross_checks(import_type, values):
                row_errors.append(RowError(number, column, reason, "invalid_value"))
        if not row_errors:
            try:
                _complete(import_type, values)
            except Invalid as exc:
                column = "slug" if exc.code == "too_long" else "nom"
                row_errors.append(RowError(number, column, str(exc), exc.code))
        if row_errors:
            result.errors.extend(row_errors)
            continue
        candidates.append(ValidRow(number, values, _key(import_type, values)))

    by_key: dict[Any, list[ValidRow]] = defaultdict(list)
    for row in candidates:
        by_key[row.key].append(row)
    for row in candidates:
        same = by_key[row.key]
        if len(same) > 1:
            column, label = _key_label(import_type, row.key)
            rows = ", ".join(str(r.row) for r in same)
            result.errors.append(
                RowError(
                    row.row,
                    column,
                    f"{label} appears on rows {rows}: none of them is imported",
                    "duplicate_key",
                )
            )
        else:
            result.rows.append(row)
    result.errors.sort(key=lambda e: (e.row or 0, e.column or ""))
    return result


def _complete(import_type: str, values: dict[str, Any]) -> None:
    """Values derived from others in the same row."""
    if import_type == ENTREPRISES:
        values["siren"] = values["siret"][:9]
    elif import_type == VILLES:
        values["nom_normalise"] = normalise_name(values["nom"])
        if not slugify(values["nom"]):
            raise Invalid(f"nom {values['nom']!r} has no letter or digit")
        code = values.get("code_insee")
        if code and values.get("departement") is None:
            values["departement"] = code[:3] if code.startswith("97") else code[:2]
    elif import_type in (CATEGORIES, SOUS_CATEGORIES) and values.get("slug") is None:
        values["slug"] = slugify(values["nom"])
        if not values["slug"]:
            raise Invalid(f"nom {values['nom']!r} gives no usable slug: add a slug column")
        limit = MAX_LENGTHS[import_type]["slug"]
        if len(values["slug"]) > limit:
            raise Invalid(
                f"the slug made from nom is {len(values['slug']):,} characters long; the limit "
                f"for slug is {limit:,}: add a shorter slug column",
                "too_long",
            )


def check_known_naf(validated: Validated, known: Iterable[str]) -> None:
    """Move rows whose NAF code is not in the nomenclature to the errors."""
    known = set(known)
    kept = []
    for row in validated.rows:
        code = row.values.get("naf_code")
        if code is not None and code not in known:
            validated.errors.append(
                RowError(
                    row.row,
                    "naf_code",
                    f"unknown NAF code {code} (neither a NAF rév. 2 nor a NAF 2025 code)",
                    "unknown_naf_code",
                )
            )
        else:
            kept.append(row)
    validated.rows = kept
    validated.errors.sort(key=lambda e: (e.row or 0, e.column or ""))
