"""``python -m vtc.tasks`` prints the folder to pass to ``lmms-eval --include_path``."""
from . import TASKS_DIR

print(TASKS_DIR)
