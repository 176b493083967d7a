"""The types that flow through the daemon, its clocks and its errors; imports nothing else of ours."""
