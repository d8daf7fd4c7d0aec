"""``vtc bench``: method x budget sweeps through lmms-eval, with tables and plots."""
