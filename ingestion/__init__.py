"""tidemark ingestion: land CSV files and database tables as a partitioned Parquet lake with CDC state."""

__version__ = "0.1.0"
