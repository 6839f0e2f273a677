"""BLE transport of the lock (PROFILE.md sec. 5)."""
