"""The JSON schemas of pycni's network configurations, installed as the package pycni.schemas
(see [tool.setuptools] in pyproject.toml) so that `pycni validate` finds them with
importlib.resources in an editable install and in a wheel alike. The per-call path never reads
them: it runs the validators generated from them (pycni.validators, packaging/gen_validator.py).
"""
