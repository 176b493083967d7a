"""The car guard: armed by the vehicle's own state, it turns watched sounds at the vehicle into an alarm.

`rules` reads the vehicle-state messages, `machine` is the guard's state machine; both are pure
(no I/O, the clock is given), so that the daemon and the tests drive them alike.
"""
