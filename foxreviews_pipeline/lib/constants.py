"""Constants the whole platform shares."""

from zoneinfo import ZoneInfo

# SIRENE days, INSEE's timestamps, the partitions and every schedule are in Paris time.
PARIS_TIMEZONE = "Europe/Paris"
PARIS = ZoneInfo(PARIS_TIMEZONE)
