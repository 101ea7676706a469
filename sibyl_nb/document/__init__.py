"""YAML / dict -> validated Graph IR. Every error names a YAML path and line."""
