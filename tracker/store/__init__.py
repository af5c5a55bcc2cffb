"""Storage: schema and migrations, COPY writer, queries, embedded PostgreSQL."""
