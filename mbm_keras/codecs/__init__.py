"""Codecs: reading and encoding one kind of cell, below the modalities that use them.

WAV files (`audio`), images (`image`), text tokenizers (`text`), tabular cells
(`tabular`), a transcript's characters (`vocabulary`), file paths of a manifest
column (`paths`) and the in-graph checks whose failures name the row and file
(`asserts`). Training (`data/`) and serving (`deploy/`) decode through these
same functions.
"""
