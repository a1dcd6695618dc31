"""The serving frameworks a user would pick instead of zhserve, on zhserve's own model core, for `make bench`."""
