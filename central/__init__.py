"""IsoEdge central ingest: verify agents' signed envelopes and store them in PostgreSQL."""
