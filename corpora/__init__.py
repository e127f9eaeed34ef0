"""Installed as `charlstm.corpora`: carries registry.json, the downloadable corpora."""
