"""Integrations with training frameworks: the Hugging Face ``Trainer`` (:mod:`.hf`), Lightning
(:mod:`.lightning`), and what they share: the optimizer/scheduler layout conversions
(:mod:`.layout`) and the activation cache routed through a model's forward (:mod:`.trainer_cache`).
Each imports its framework only when used."""
