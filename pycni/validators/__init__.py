"""Config validators generated from conf/schemas by packaging/gen_validator.py."""
