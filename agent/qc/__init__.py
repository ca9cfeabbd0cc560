"""QC rules evaluated on the device, and the alerts they raise."""
