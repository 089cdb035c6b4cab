"""The sweep runner behind ``python -m ab.nn.train``: configs, Optuna studies, trials."""
