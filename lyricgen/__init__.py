"""lyricgen: the Spanish lyrics ML library. Each job kind is one module with `run(params, ctx)`.

Importing this package must stay cheap: no torch/transformers at import time (kinds import
them lazily), so `python -m lyricgen clean` starts fast.
"""

__version__ = "0.1.0"
