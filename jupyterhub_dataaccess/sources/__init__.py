"""The data plane: readers for file, SQL and S3 sources, column masks, row filters, streaming."""
