"""Where researchers already work: callbacks for PyTorch Lightning
(:mod:`.lightning`) and Hugging Face ``transformers`` (:mod:`.transformers`), and logging of
reports to MLflow (:mod:`.mlflow`) and Weights & Biases (:mod:`.wandb`).

Each module imports its framework only when used; each framework is an extra
(``pip install 'energymeter-ml[lightning]'``...). See docs/integrations.md.
"""

from __future__ import annotations
