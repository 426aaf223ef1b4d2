"""What summarize writes beside the tables: viral regions (as a table, FASTA and GFF3), genome-browser
tracks, plots, HTML views, the viral FASTA and the original tool's own files."""
