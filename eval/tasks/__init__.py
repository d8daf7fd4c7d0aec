"""vtc's lmms-eval tasks, installed with the package as ``vtc.tasks``.

``vtc bench`` finds them itself; for ``lmms-eval`` itself pass their folder as the include path:
``lmms-eval --model vtc --tasks vtc_synth --include_path "$(python -m vtc.tasks)"``.
"""
from pathlib import Path

TASKS_DIR = Path(__file__).resolve().parent
