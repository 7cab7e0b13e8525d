"""SIREN / SIRET validity (Luhn key), with La Poste's documented exception.

A SIREN is 9 digits whose Luhn sum is a multiple of 10; a SIRET is the SIREN followed by a
5-digit NIC, and the 14 digits are Luhn-valid as a whole. La Poste (SIREN 356000000) has more
establishments than the NIC key allows, so apart from its head office (35600000000048) its
SIRETs are only required to have a digit sum that is a multiple of 5.
"""

from __future__ import annotations

import numpy as np

LA_POSTE_SIREN = "356000000"
LA_POSTE_HEAD_OFFICE_SIRET = "35600000000048"

# Luhn doubling table: 2*d folded back to one digit.
_DOUBLED = (0, 2, 4, 6, 8, 1, 3, 5, 7, 9)


def luhn_sum(digits: str) -> int:
    """Luhn sum of a string of digits (the rightmost digit is not doubled)."""
    rev = digits[::-1]
    return sum(map(int, rev[0::2])) + sum(map(_DOUBLED.__getitem__, map(int, rev[1::2])))


def luhn_valid(value: object) -> bool:
    """True when `value` is a non-empty string of ASCII digits whose Luhn sum ends in 0."""
    return (
        isinstance(value, str)
        and value.isascii()
        and value.isdigit()
        and luhn_sum(value) % 10 == 0
    )


def luhn_check_digit(partial: str) -> str:
    """The digit to append to `partial` so that the result is Luhn-valid."""
    # With the key appended, every digit of `partial` moves one place left.
    total = luhn_sum(partial + "0")
    return str((10 - total % 10) % 10)


def siren_valid(siren: object) -> bool:
    """A 9-digit, Luhn-valid SIREN."""
    return isinstance(siren, str) and len(siren) == 9 and luhn_valid(siren)


def siret_valid(siret: object) -> bool:
    """A 14-digit SIRET whose SIREN is valid and whose key is right (La Poste's rule apart)."""
    if not (isinstance(siret, str) and len(siret) == 14 and siret.isascii() and siret.isdigit()):
        return False
    if siret.startswith(LA_POSTE_SIREN) and siret != LA_POSTE_HEAD_OFFICE_SIRET:
        return sum(ord(c) - 48 for c in siret) % 5 == 0
    return siren_valid(siret[:9]) and luhn_sum(siret) % 10 == 0


_DOUBLED_ARRAY = np.array(_DOUBLED, dtype=np.uint8)
_LA_POSTE_DIGITS = [ord(c) - 48 for c in LA_POSTE_SIREN]
_LA_POSTE_HEAD_OFFICE_DIGITS = [ord(c) - 48 for c in LA_POSTE_HEAD_OFFICE_SIRET]


def sirets_valid(digits: np.ndarray) -> np.ndarray:
    """`siret_valid` for many SIRETs at once: `digits` is an (n, 14) array of digit values
    (0–9), one row per SIRET already known to be 14 ASCII digits; returns n booleans."""
    n = len(digits)
    siret_sum = np.zeros(n, np.int16)
    siren_sum = np.zeros(n, np.int16)
    digit_sum = np.zeros(n, np.int16)
    la_poste = np.ones(n, bool)
    head_office = np.ones(n, bool)
    for i in range(14):
        column = digits[:, i]
        doubled = _DOUBLED_ARRAY[column]
        digit_sum += column
        # Luhn from the right: the 14-digit SIRET doubles its even positions from the left
        # (0, 2, … 12), the 9-digit SIREN its odd ones (1, 3, 5, 7).
        siret_sum += doubled if i % 2 == 0 else column
        if i < 9:
            siren_sum += doubled if i % 2 == 1 else column
            la_poste &= column == _LA_POSTE_DIGITS[i]
        head_office &= column == _LA_POSTE_HEAD_OFFICE_DIGITS[i]
    luhn = (siret_sum % 10 == 0) & (siren_sum % 10 == 0)
    result: np.ndarray = np.where(la_poste & ~head_office, digit_sum % 5 == 0, luhn)
    return result


def la_poste_nic(prefix4: str) -> str:
    """A NIC for La Poste: `prefix4` plus the digit that brings the SIRET's digit sum to a
    multiple of 5."""
    partial = LA_POSTE_SIREN + prefix4
    total = sum(ord(c) - 48 for c in partial)
    return prefix4 + str((5 - total % 5) % 5)
