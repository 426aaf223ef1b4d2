"""What summarize writes beside the tables: viral regions, genome-browser tracks, plots, HTML views,
the viral FASTA and the original tool's own files."""
