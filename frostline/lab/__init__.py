"""The workbench: how frostline's own experiments run (``pip install 'frostline[lab]'``).

The training recipe behind ``frostline train``, datasets, the model zoo and pretrained models,
benchmarks, reports and plots, the SmartFRZ corpus builder and the CLI. It depends on the
library (``frostline``), never the other way round.
"""

from . import zoo, pretrained  # noqa: F401  (pretrained registers minilm / efficientnet-lite0 in the zoo)
