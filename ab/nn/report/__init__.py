"""Reports from the statistics database: comparison tables and plots."""
