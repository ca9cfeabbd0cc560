"""Dose calibrator drivers: serial, serial-over-TCP (`socket://`) and RFC 2217 ports.

One folder per model (`capintec_crc15/`, `atomlab500/`, `vdc404/`, `vik202/`,
`serial_line/`), each registered in the `isoedge.drivers` entry-point group under its type
name. What they share stays here: the serial transport (`transport`), the configuration base,
parsing helpers and failure policy (`common`), and the simulator profile interface
(`simulation`). Each model keeps its pure parsing functions apart from I/O so they can be
fuzzed.
"""
