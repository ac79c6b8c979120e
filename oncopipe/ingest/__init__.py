"""The prepare stages' toolkit: the raw-file walker, kept/rejected accounting,
the process pool, the array writer, contact sheets, input warnings."""
