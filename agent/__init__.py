"""IsoEdge agent: acquisition, QC, durable signed delivery, the console and the tools.

The sub-packages are the stages a reading passes through (docs/development.md):
core → physics → acquisition → qc → delivery, with console, service and tools beside the flow.
"""
