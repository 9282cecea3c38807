"""Results: the results schema, run folders and their metadata, raw results for machines
without pandas, statistics and comparisons, reports and the figure check."""
