"""Sources: how to find what a table has to land (CSV files now; JDBC tables later)."""
