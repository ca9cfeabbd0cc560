"""Instrument simulators for development, tests and the demo.

Each simulator module offers `add_arguments(parser)` and `async run(args)` for
`isoedge simulate KIND`, plus a programmatic class with `start()` / `stop()` used by
tests and `isoedge demo`.
"""

SIMULATOR_MODULES: dict[str, str] = {
    "dosecal": "simulators.dosecal",
    "modbus": "simulators.modbus",
    "opcua": "simulators.opcua",
}
"""`isoedge simulate KIND` → module path implementing it."""
