"""The built-in techniques, one module per shop. Importing this package registers nothing: the registry
imports a module on the first lookup of one of its techniques (``BUILTIN_MODULES`` in ``registry.py``)."""
