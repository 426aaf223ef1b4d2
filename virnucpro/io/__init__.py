"""Files: sequence reading, atomic writes, checksums and model notes, converted model files, the
embedding store and embedding files, TSV tables."""
