"""The statistics database: its tables and schema revisions, writes, queries, LEMUR's JSON mirror and copies."""
