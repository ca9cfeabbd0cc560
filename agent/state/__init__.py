"""The agent's state database: one SQLite file, one writer thread.

Below the stages that use it: `StateDatabase` owns the connection's thread, the damaged-file
check, the disk-full retry and the free-space measurements; delivery (the outbox of signed
envelopes) is its host, and QC, alerts, audit, records and prescriptions write through
`StateWriter`; storage pressure (`Pressure`) and the free-space policy (`diskspace`) are its
states.
"""
