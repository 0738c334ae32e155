"""Pure DataFrame-in, DataFrame-out transforms. No I/O, no clock: ``as_of`` is passed in."""
