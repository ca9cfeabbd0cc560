"""Acquisition: one supervised task per device, and the pipeline from raw sample to reading.

A driver's samples become readings here (units, nuclide, decay correction) and update the live
state the console shows; they then pass QC and go to the outbox.
"""
