"""The agent's state database: one SQLite file, one writer thread.

Below the stages that use it: delivery (the outbox of signed envelopes), QC, alerts, audit and
prescriptions all write through `StateWriter`; storage pressure (`Pressure`) and the free-space
policy (`diskspace`) are its states.
"""
