"""The lock application: ACE resources, token store, decision log, actuator."""
