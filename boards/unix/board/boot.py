"""Simulated board boot: nothing to set up (the ESP32's boot.py silences
the ROM's debug output); kept so a bad main.py never stops the REPL."""
