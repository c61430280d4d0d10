"""Integrations with training frameworks: the Hugging Face ``Trainer`` (:mod:`.hf`), Lightning
(:mod:`.lightning`), and the optimizer/scheduler layout conversions they share (:mod:`.layout`).
Each imports its framework only when used."""
