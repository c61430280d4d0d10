"""The CKA oracle: freeze a unit once its CKA to a finished reference run is stable; the method card is ``README.md`` here."""

from .cka_oracle import DEFAULT_FLOOR, DEFAULT_TOLERANCE, DEFAULT_WINDOW, CKAOracle, check_rule, cka_ready, normalised_cka

__all__ = ["DEFAULT_FLOOR", "DEFAULT_TOLERANCE", "DEFAULT_WINDOW", "CKAOracle", "check_rule", "cka_ready", "normalised_cka"]
